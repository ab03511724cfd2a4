//! The description rules, free of any WebAssembly glue.
//!
//! [`Rules::rewrite`] applies, in this order:
//! 1. [`normalise`]: whitespace of any kind becomes a single space, runs are
//!    collapsed, the ends trimmed, and control and invisible formatting
//!    characters removed (so "cas\u{200B}ino" cannot slip past a blocked word).
//! 2. [`mask_card_numbers`]: anything shaped like a card number is masked.
//! 3. Blocked words are looked for in the result (case-insensitive, whole word).
//! 4. The result's length, in Unicode scalar values (`char`s), is checked.

use std::fmt;

use serde::Deserialize;

/// `max_length_chars` when the config does not give one.
pub const DEFAULT_MAX_LENGTH_CHARS: u32 = 140;

/// Card numbers (ISO/IEC 7812 PANs) have 13 to 19 digits.
const CARD_DIGITS_MIN: usize = 13;
const CARD_DIGITS_MAX: usize = 19;
/// What replaces all but the last four digits of a card number.
const CARD_MASK_PREFIX: &str = "**** **** **** ";

/// The operator's JSON. Both keys are optional; unknown keys are refused so
/// that a misspelt key cannot silently switch a rule off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_max_length_chars")]
    max_length_chars: u32,
    #[serde(default)]
    blocked_words: Vec<String>,
}

fn default_max_length_chars() -> u32 {
    DEFAULT_MAX_LENGTH_CHARS
}

/// A blocked word or phrase as configured, and the form it is matched in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockedWord {
    configured: String,
    lowercase: String,
}

/// A checked configuration. The default is what `{}` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    max_length_chars: u32,
    blocked_words: Vec<BlockedWord>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_length_chars: DEFAULT_MAX_LENGTH_CHARS,
            blocked_words: Vec::new(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Json(serde_json::Error),
    /// A blocked word that is empty once whitespace and invisible characters
    /// are removed: it would match nothing, so it is surely a mistake.
    EmptyBlockedWord {
        index: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid description config: {e}"),
            Self::EmptyBlockedWord { index } => {
                write!(
                    f,
                    "invalid description config: blocked_words[{index}] is empty"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a description was refused; [`Refusal::code`] is the stable code, the
/// `Display` text the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BlockedWord {
        word: String,
    },
    TooLong {
        length_chars: usize,
        max_length_chars: u32,
    },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BlockedWord { .. } => "description_blocked_word",
            Self::TooLong { .. } => "description_too_long",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BlockedWord { word } => {
                write!(f, "The description contains the blocked word \"{word}\".")
            }
            Self::TooLong {
                length_chars,
                max_length_chars,
            } => write!(
                f,
                "The description is {length_chars} characters long; the limit is \
                 {max_length_chars} characters."
            ),
        }
    }
}

impl Rules {
    /// Parses and checks the operator's JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json).map_err(ConfigError::Json)?;
        let mut blocked_words = Vec::with_capacity(raw.blocked_words.len());
        for (index, word) in raw.blocked_words.iter().enumerate() {
            // Normalised like descriptions are, so "online  casino" still matches.
            let configured = normalise(word);
            if configured.is_empty() {
                return Err(ConfigError::EmptyBlockedWord { index });
            }
            let lowercase = configured.to_lowercase();
            blocked_words.push(BlockedWord {
                configured,
                lowercase,
            });
        }
        Ok(Self {
            max_length_chars: raw.max_length_chars,
            blocked_words,
        })
    }

    /// One line for the engine's log after a successful configure.
    pub fn summary(&self) -> String {
        format!(
            "description configured: max_length_chars {}, {} blocked word(s)",
            self.max_length_chars,
            self.blocked_words.len()
        )
    }

    /// The description to store, or why it is refused.
    pub fn rewrite(&self, description: &str) -> Result<String, Refusal> {
        let text = mask_card_numbers(&normalise(description));
        if !self.blocked_words.is_empty() {
            let lowercase = text.to_lowercase();
            if let Some(word) = self
                .blocked_words
                .iter()
                .find(|w| contains_whole_word(&lowercase, &w.lowercase))
            {
                return Err(Refusal::BlockedWord {
                    word: word.configured.clone(),
                });
            }
        }
        let length_chars = text.chars().count();
        if length_chars > self.max_length_chars as usize {
            return Err(Refusal::TooLong {
                length_chars,
                max_length_chars: self.max_length_chars,
            });
        }
        Ok(text)
    }
}

/// Turns every run of whitespace (any Unicode whitespace, tabs and line breaks
/// included) into one space, trims both ends, and drops control characters and
/// invisible formatting characters (see [`is_invisible`]).
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space_pending = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space_pending = true;
        } else if !is_invisible(c) {
            if space_pending && !out.is_empty() {
                out.push(' ');
            }
            space_pending = false;
            out.push(c);
        }
    }
    out
}

/// Control characters (Unicode category Cc) and the invisible format
/// characters that can hide text or reorder how it displays: soft hyphen,
/// zero-width space and word joiner, bidirectional marks, embeddings,
/// overrides and isolates, and the byte-order mark. Zero-width joiner and
/// non-joiner are kept: scripts and emoji sequences need them.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Masks card numbers, keeping the last four digits: "4111-1111-1111-1234"
/// becomes "**** **** **** 1234".
///
/// The rule: a run is a maximal sequence of ASCII digits in which single
/// spaces or single hyphens may stand between two digits. A run is masked
/// whole when it has 13 to 19 digits (the lengths of card numbers), or when it
/// has more than 19 digits and contains a separator, because then a card
/// number may be sitting next to other numbers ("4111 1111 1111 1111 2024").
/// An unbroken run of more than 19 digits is left alone: it is some other
/// reference, not a card number. There is deliberately no Luhn check: a
/// mistyped card number is still sensitive, and masking a long reference by
/// mistake costs little.
pub fn mask_card_numbers(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut i = 0;
    // Digits, spaces and hyphens are ASCII, so byte indices found here always
    // fall on char boundaries.
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut digit_count = 0;
        let mut separated = false;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                digit_count += 1;
                i += 1;
            }
            let separator_joins_digits = i + 1 < bytes.len()
                && matches!(bytes[i], b' ' | b'-')
                && bytes[i + 1].is_ascii_digit();
            if !separator_joins_digits {
                break;
            }
            separated = true;
            i += 1;
        }
        let is_card_length = (CARD_DIGITS_MIN..=CARD_DIGITS_MAX).contains(&digit_count);
        if is_card_length || (digit_count > CARD_DIGITS_MAX && separated) {
            let digits: Vec<u8> = bytes[start..i]
                .iter()
                .copied()
                .filter(u8::is_ascii_digit)
                .collect();
            out.push_str(&text[copied_up_to..start]);
            out.push_str(CARD_MASK_PREFIX);
            out.extend(digits[digits.len() - 4..].iter().map(|&d| char::from(d)));
            copied_up_to = i;
        }
    }
    out.push_str(&text[copied_up_to..]);
    out
}

/// Whether `needle` occurs in `haystack` with no letter or digit right before
/// or after it. Both are already lower-cased.
fn contains_whole_word(haystack: &str, needle: &str) -> bool {
    let is_word_char = |c: char| c.is_alphanumeric();
    let mut from = 0;
    while let Some(found) = haystack[from..].find(needle) {
        let start = from + found;
        let end = start + needle.len();
        let before = haystack[..start].chars().next_back();
        let after = haystack[end..].chars().next();
        if !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char) {
            return true;
        }
        // Step one char on, not past the match, so overlapping phrases are seen.
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from_json(
            r#"{"max_length_chars": 40, "blocked_words": ["casino", "Online Bet", "Überweisung"]}"#,
        )
        .unwrap()
    }

    fn rewrite(text: &str) -> Result<String, Refusal> {
        rules().rewrite(text)
    }

    #[test]
    fn trims_and_collapses_whitespace() {
        assert_eq!(
            rewrite("  Rent \t for\n\n  May\u{00A0}2025 ").unwrap(),
            "Rent for May 2025"
        );
    }

    #[test]
    fn removes_control_and_invisible_characters() {
        assert_eq!(
            rewrite("Rent\u{0}\u{7} for\u{1b}[31m May").unwrap(),
            "Rent for[31m May"
        );
        assert_eq!(
            rewrite("\u{202E}yaM rof tneR\u{202C}").unwrap(),
            "yaM rof tneR"
        );
        assert_eq!(rewrite("\u{FEFF}Rent").unwrap(), "Rent");
    }

    #[test]
    fn an_empty_or_blank_description_becomes_empty() {
        assert_eq!(rewrite("").unwrap(), "");
        assert_eq!(rewrite(" \t\n\u{200B} ").unwrap(), "");
    }

    #[test]
    fn masks_a_card_number_with_spaces_keeping_the_last_four_digits() {
        assert_eq!(
            rewrite("Card 4111 1111 1111 1234 thanks").unwrap(),
            "Card **** **** **** 1234 thanks"
        );
    }

    #[test]
    fn masks_card_numbers_with_hyphens_or_no_separators_of_13_to_19_digits() {
        assert_eq!(
            mask_card_numbers("4111-1111-1111-1234"),
            "**** **** **** 1234"
        );
        assert_eq!(
            mask_card_numbers("pan:4222222222222."),
            "pan:**** **** **** 2222."
        );
        assert_eq!(
            mask_card_numbers("6011 0009 9013 9424 123"),
            "**** **** **** 4123"
        );
    }

    #[test]
    fn masks_a_card_number_run_together_with_other_numbers() {
        assert_eq!(
            mask_card_numbers("4111 1111 1111 1111 2024 05"),
            "**** **** **** 2405"
        );
    }

    #[test]
    fn leaves_shorter_and_unbroken_longer_numbers_alone() {
        for text in [
            "Invoice 1234 5678 9012",
            "Ref 12345678901234567890",
            "2025-05-01",
            "1234--5678--9012--3456",
            "4111 1111 1111 1111".replace(' ', "  ").as_str(),
        ] {
            assert_eq!(mask_card_numbers(text), text);
        }
    }

    #[test]
    fn masks_a_card_number_split_by_line_breaks_after_whitespace_collapses() {
        assert_eq!(
            rewrite("4111\n1111\t1111  1234").unwrap(),
            "**** **** **** 1234"
        );
    }

    #[test]
    fn masks_several_card_numbers_and_keeps_unicode_text_around_them() {
        assert_eq!(
            mask_card_numbers("Zahlung € 4111111111111111 und 5500-0000-0000-0004 ✓"),
            "Zahlung € **** **** **** 1111 und **** **** **** 0004 ✓"
        );
    }

    #[test]
    fn rejects_a_blocked_word_in_any_case() {
        let refusal = rewrite("Night at the CASINO").unwrap_err();
        assert_eq!(refusal.code(), "description_blocked_word");
        assert_eq!(
            refusal.to_string(),
            "The description contains the blocked word \"casino\"."
        );
        assert!(rewrite("casino, again").is_err());
    }

    #[test]
    fn matches_blocked_words_as_whole_words_only() {
        assert_eq!(
            rewrite("Casinos and casino2 and xcasino").unwrap(),
            "Casinos and casino2 and xcasino"
        );
        assert!(rewrite("my-casino-trip").is_err());
    }

    #[test]
    fn matches_blocked_phrases_and_unicode_words_case_insensitively() {
        assert!(rewrite("Winnings from ONLINE   bet").is_err());
        let refusal = rewrite("ÜBERWEISUNG für Mai").unwrap_err();
        assert_eq!(
            refusal,
            Refusal::BlockedWord {
                word: "Überweisung".into()
            }
        );
        assert!(rewrite("Überweisungen für Mai").is_ok());
    }

    #[test]
    fn sees_blocked_words_hidden_by_invisible_characters() {
        assert!(rewrite("cas\u{200B}ino").is_err());
        assert!(rewrite("cas\u{0}ino").is_err());
    }

    #[test]
    fn rejects_a_description_longer_than_the_limit_after_rewriting() {
        let forty = "a".repeat(40);
        assert_eq!(rewrite(&forty).unwrap(), forty);
        let refusal = rewrite(&format!("{forty}b")).unwrap_err();
        assert_eq!(refusal.code(), "description_too_long");
        assert_eq!(
            refusal.to_string(),
            "The description is 41 characters long; the limit is 40 characters."
        );
        // Whitespace that collapses does not count.
        assert!(rewrite(&format!("   {}   {}   ", "a".repeat(20), "b".repeat(19))).is_ok());
    }

    #[test]
    fn counts_length_in_characters_not_bytes() {
        let euros = "€".repeat(40); // 120 bytes
        assert_eq!(rewrite(&euros).unwrap(), euros);
        assert!(rewrite(&"€".repeat(41)).is_err());
        let emoji = "👍".repeat(40); // 160 bytes
        assert_eq!(rewrite(&emoji).unwrap(), emoji);
    }

    #[test]
    fn defaults_to_140_chars_and_no_blocked_words() {
        let rules = Rules::from_json("{}").unwrap();
        assert_eq!(rules, Rules::default());
        assert!(rules.rewrite(&"x".repeat(140)).is_ok());
        assert!(rules.rewrite(&"x".repeat(141)).is_err());
        assert!(rules.rewrite("casino").is_ok());
    }

    #[test]
    fn refuses_unknown_keys_and_empty_blocked_words() {
        assert!(matches!(
            Rules::from_json(r#"{"max_length": 10}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            Rules::from_json(r#"{"max_length_chars": -1}"#),
            Err(ConfigError::Json(_))
        ));
        let err = Rules::from_json(r#"{"blocked_words": ["ok", " \t "]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid description config: blocked_words[1] is empty"
        );
    }
}
