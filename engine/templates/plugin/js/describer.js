// {{name}}: a transfer-engine describer plugin.
//
// The policy: trim the description and collapse every run of whitespace
// into one space; reject a description that contains a blocked word
// (ignoring case) with `description_blocked`. Config example:
// {"blocked_words": ["casino"]}; without a "blocked_words" key,
// DEFAULT_BLOCKED_WORDS apply.
//
// Change `rewriteText` (and `parseConfig`) to write your own rule.

const DEFAULT_BLOCKED_WORDS = ['casino'];

function parseConfig(text) {
  const config = JSON.parse(text);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw 'expected a JSON object';
  // Unknown keys are refused, so that a misspelt key cannot silently leave the default in force.
  for (const key of Object.keys(config)) {
    if (key !== 'blocked_words') throw `unknown key "${key}"; the one key is "blocked_words"`;
  }
  const words = config.blocked_words ?? DEFAULT_BLOCKED_WORDS;
  // An empty word would be found in every description.
  if (!Array.isArray(words) || !words.every((w) => typeof w === 'string' && w.trim() !== '')) {
    throw 'blocked_words must be a list of non-empty strings';
  }
  return words.map((w) => w.trim().toLowerCase());
}

// The rule itself: the cleaned description (a string), or a rejection {code, message}.
function rewriteText(blockedWords, description) {
  const cleaned = description.split(/\s+/).filter((part) => part !== '').join(' ');
  const lowered = cleaned.toLowerCase();
  for (const word of blockedWords) {
    if (lowered.includes(word)) {
      return { code: 'description_blocked', message: `The description contains the blocked word "${word}".` };
    }
  }
  return cleaned;
}

// Set by configure. The engine configures every fresh instance before it
// calls rewrite, so each call sees exactly the operator's config.
let blockedWords = [];

export function configure(config) {
  try {
    blockedWords = parseConfig(config);
  } catch (e) {
    // A thrown string is the error of result<_, string>: the engine refuses the config.
    throw `invalid {{name}} config: ${e instanceof Error ? e.message : e}`;
  }
}

export function rewrite(description, _transfer) {
  const answer = rewriteText(blockedWords, description);
  // A thrown {code, message} is the error of result<string, rejection>: the transfer is rejected with it.
  if (typeof answer !== 'string') throw answer;
  return answer;
}
