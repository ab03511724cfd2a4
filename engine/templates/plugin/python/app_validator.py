"""{{name}}: a transfer-engine validator plugin.

The policy: refuse a transfer whose amount is over `max_amount_minor`, in
minor units of the transfer's currency (the config's one key; default
100000, that is 1000.00 EUR). Config example: {"max_amount_minor": 50000}.

Change `check` (and `parse_config`) to write your own rule. Money is integer
minor units: Python's int is exact; never turn an amount into a float.
"""

import json

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

DEFAULT_MAX_AMOUNT_MINOR = 100000
I64_MAX = 2**63 - 1


def _refuse_float(text):
    raise ValueError(f"{text} is not an integer (amounts are minor units)")


def parse_config(text):
    """The operator's JSON, checked. Unknown keys are refused, so that a
    misspelt key cannot silently leave the default in force."""
    config = json.loads(text, parse_float=_refuse_float)
    if not isinstance(config, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(config) - {"max_amount_minor"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; the one key is 'max_amount_minor'")
    limit = config.get("max_amount_minor", DEFAULT_MAX_AMOUNT_MINOR)
    # bool is a subclass of int: JSON true is not an amount.
    if type(limit) is not int or not 0 <= limit <= I64_MAX:
        raise ValueError("max_amount_minor must be a whole number of minor units, 0 or more")
    return limit


def format_minor(amount_minor, exponent):
    """Minor units as a decimal: (123456, 2) is "1234.56". Integers only."""
    digits = str(abs(amount_minor)).rjust(exponent + 1, "0")
    sign = "-" if amount_minor < 0 else ""
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def check(limit, amount_minor, currency):
    """The rule itself: None to allow, or a rejection."""
    if amount_minor > limit:
        code, exponent = currency.code, currency.exponent
        return types.Rejection(
            code="amount_over_limit",
            message=f"The amount {format_minor(amount_minor, exponent)} {code} is over the limit of "
            f"{format_minor(limit, exponent)} {code} per transfer.",
        )
    return None


# Set by configure. The engine configures every fresh instance before it
# calls validate, so each call sees exactly the operator's config.
_limit = DEFAULT_MAX_AMOUNT_MINOR


class WitWorld(wit_world.WitWorld):
    def configure(self, config: str) -> types.Needs:
        global _limit
        try:
            _limit = parse_config(config)
        except ValueError as e:
            # The error of result<needs, string>: the engine refuses the config.
            raise Err(f"invalid {{name}} config: {e}")
        # This rule reads only the transfer itself: no accounts, no velocity windows.
        return types.Needs(accounts=False, velocity_windows_seconds=[])

    def validate(self, transfer: types.Transfer, context: types.Context) -> wit_world.Verdict:
        if transfer.amount_minor is None:  # always present for validation; refuse rather than guess
            return wit_world.Verdict_Reject(types.Rejection(code="amount_missing", message="The transfer has no amount."))
        rejection = check(_limit, transfer.amount_minor, transfer.currency)
        return wit_world.Verdict_Allow() if rejection is None else wit_world.Verdict_Reject(rejection)
