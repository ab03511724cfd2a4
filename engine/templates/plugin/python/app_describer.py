"""{{name}}: a transfer-engine describer plugin.

The policy: trim the description and collapse every run of whitespace into
one space; reject a description that contains a blocked word (ignoring case)
with `description_blocked`. Config example: {"blocked_words": ["casino"]};
without a "blocked_words" key, DEFAULT_BLOCKED_WORDS apply.

Change `rewrite_text` (and `parse_config`) to write your own rule.
"""

import json

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

DEFAULT_BLOCKED_WORDS = ["casino"]


def parse_config(text):
    """The operator's JSON, checked. Unknown keys are refused, so that a
    misspelt key cannot silently leave the default in force."""
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(config) - {"blocked_words"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; the one key is 'blocked_words'")
    words = config.get("blocked_words", DEFAULT_BLOCKED_WORDS)
    # An empty word would be found in every description.
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError("blocked_words must be a list of non-empty strings")
    return [w.strip().lower() for w in words]


def rewrite_text(blocked_words, description):
    """The rule itself: the cleaned description, or a rejection."""
    cleaned = " ".join(description.split())
    lowered = cleaned.lower()
    for word in blocked_words:
        if word in lowered:
            return types.Rejection(code="description_blocked", message=f"The description contains the blocked word \"{word}\".")
    return cleaned


# Set by configure. The engine configures every fresh instance before it
# calls rewrite, so each call sees exactly the operator's config.
_blocked_words = []


class WitWorld(wit_world.WitWorld):
    def configure(self, config: str) -> None:
        global _blocked_words
        try:
            _blocked_words = parse_config(config)
        except ValueError as e:
            # The error of result<_, string>: the engine refuses the config.
            raise Err(f"invalid {{name}} config: {e}")

    def rewrite(self, description: str, transfer: types.Transfer) -> str:
        answer = rewrite_text(_blocked_words, description)
        if isinstance(answer, types.Rejection):
            # The error of result<string, rejection>: the transfer is rejected with it.
            raise Err(answer)
        return answer
