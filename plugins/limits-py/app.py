"""`limits`, in Python: a validator that refuses transfers over a
per-currency maximum amount, or from or to a blocked owner.

The same config, verdicts, codes and messages as the Rust `limits`
(`../limits/src/policy.rs`); `tests/plugin_parity.rs` in the engine runs the
three ports side by side and asserts they agree.

Built with componentize-py against `wit/plugin.wit` (interface 0.2.0):
`plugins/build.sh` does it. Integers only: money is never a float.
"""

import json

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class ConfigError(Exception):
    pass


def _is_i64(value):
    # bool is a subclass of int in Python; JSON true is not a number.
    return type(value) is int and I64_MIN <= value <= I64_MAX


def _is_currency_code(code):
    return len(code) == 3 and all("A" <= c <= "Z" for c in code)


def _no_duplicate_keys(pairs):
    # serde_json, as the Rust port uses it, refuses a key given twice in a map.
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ConfigError("invalid limits config: a key is given twice")
    return dict(pairs)


def parse_config(text):
    """The operator's JSON, checked: unknown keys are refused so that a
    misspelt key cannot silently switch a limit off."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_float=_refuse_float)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"invalid limits config: {e}")
    if not isinstance(raw, dict):
        raise ConfigError("invalid limits config: expected an object")
    unknown = sorted(set(raw) - {"max_amount_minor", "blocked_owners"})
    if unknown:
        raise ConfigError(f"invalid limits config: unknown field `{unknown[0]}`, expected `max_amount_minor` or `blocked_owners`")
    max_amount_minor = raw.get("max_amount_minor", {})
    if not isinstance(max_amount_minor, dict):
        raise ConfigError("invalid limits config: max_amount_minor must be an object of currency code to integer")
    for currency, limit in max_amount_minor.items():
        if not _is_i64(limit):
            raise ConfigError(f"invalid limits config: max_amount_minor for {currency} must be an integer (minor units)")
    for currency, limit in max_amount_minor.items():
        if not _is_currency_code(currency):
            raise ConfigError(
                f'invalid limits config: "{currency}" in max_amount_minor is not a currency code '
                '(three upper-case letters, for example "EUR")'
            )
        if limit < 0:
            raise ConfigError(
                f"invalid limits config: max_amount_minor for {currency} is {limit}, but a limit cannot be negative"
            )
    blocked = raw.get("blocked_owners", [])
    if not isinstance(blocked, list) or not all(_is_i64(o) for o in blocked):
        raise ConfigError("invalid limits config: blocked_owners must be a list of integer owner ids")
    return max_amount_minor, frozenset(blocked)


def _refuse_float(text):
    raise ConfigError(f"invalid limits config: {text} is not an integer (amounts are minor units)")


def format_minor(amount_minor, exponent):
    """Minor units as a plain decimal in major units: (123456, 2) is
    "1234.56", (5, 3) is "0.005". Integer-only."""
    digits = str(abs(amount_minor))
    sign = "-" if amount_minor < 0 else ""
    if exponent == 0:
        return sign + digits
    padded = digits.rjust(exponent + 1, "0")
    return f"{sign}{padded[:-exponent]}.{padded[-exponent:]}"


def _reject(code, message):
    return wit_world.Verdict_Reject(types.Rejection(code=code, message=message))


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        global _limits
        try:
            _limits = parse_config(config)
        except ConfigError as e:
            raise Err(str(e))
        # The facts of the transfer itself are enough: no context.
        return types.Needs(accounts=False, velocity_windows_seconds=[])

    def validate(self, transfer, context):
        max_amount_minor, blocked_owners = _limits
        for side, owner_id in (("sender", transfer.sender_id), ("receiver", transfer.receiver_id)):
            if owner_id in blocked_owners:
                return _reject("owner_blocked", f"The {side} (owner {owner_id}) is on the blocked owners list.")
        currency = transfer.currency.code
        limit = max_amount_minor.get(currency)
        if limit is None:
            return wit_world.Verdict_Allow()
        amount = transfer.amount_minor
        if amount is None:
            return _reject(
                "amount_missing", f"The transfer has no amount to check against the {currency} limit per transfer."
            )
        if amount > limit:
            exponent = transfer.currency.exponent
            return _reject(
                "amount_over_limit",
                f"The amount {format_minor(amount, exponent)} {currency} is over the limit of "
                f"{format_minor(limit, exponent)} {currency} per transfer.",
            )
        return wit_world.Verdict_Allow()


_limits = ({}, frozenset())
