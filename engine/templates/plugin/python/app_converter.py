"""{{name}}: a transfer-engine converter plugin.

The policy: convert with a fixed rate table, {"rates": {"USD/EUR": "0.92"}}
("FROM/TO": one FROM unit buys that many TO units). Rates are decimal
strings so that they stay exact. Without a "rates" key, DEFAULT_RATES apply.
A pair with no rate is rejected with `rate_not_found`.

The amount is computed with integers only and rounded half-to-even to the
target currency's minor unit (2.5 -> 2, 3.5 -> 4, 2.51 -> 3).

Change `convert_amount` (and `parse_config`) to write your own rule.
"""

import json
import re

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

DEFAULT_RATES = {"USD/EUR": "0.92", "EUR/USD": "1.08"}
I64_MAX = 2**63 - 1
PAIR = re.compile(r"[A-Z]{3}/[A-Z]{3}")
DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]{1,18}))?")


def _refuse_float(text):
    raise ValueError(f"{text}: write rates as strings, for example \"0.92\"")


def parse_rate(text):
    """ "0.92" -> Rate(mantissa=92, scale=2): the exact value, never a float."""
    match = DECIMAL.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a decimal rate such as \"0.92\" (at most 18 decimals)")
    fraction = match.group(2) or ""
    mantissa = int(match.group(1) + fraction)
    if not 0 < mantissa <= I64_MAX:
        raise ValueError(f"the rate {text} must be positive and fit in 64 bits")
    return types.Rate(mantissa=mantissa, scale=len(fraction))


def parse_config(text):
    """The operator's JSON, checked. Unknown keys are refused, so that a
    misspelt key cannot silently leave the defaults in force."""
    config = json.loads(text, parse_float=_refuse_float)
    if not isinstance(config, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(config) - {"rates"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; the one key is 'rates'")
    rates = config.get("rates", DEFAULT_RATES)
    if not isinstance(rates, dict):
        raise ValueError('rates must be an object such as {"USD/EUR": "0.92"}')
    for pair in rates:
        if not PAIR.fullmatch(pair):
            raise ValueError(f'{pair!r} is not a currency pair such as "USD/EUR"')
    return {pair: parse_rate(rate) for pair, rate in rates.items()}


def convert_amount(amount_minor, from_exponent, to_exponent, rate):
    """amount * rate, in the target's minor units, rounded half-to-even.
    Returns the amount, or a rejection."""
    # The exact result is amount * mantissa * 10^shift minor units.
    shift = to_exponent - from_exponent - rate.scale
    product = amount_minor * rate.mantissa
    if shift >= 0:
        converted = product * 10**shift
    else:
        converted, remainder = divmod(product, 10**-shift)
        twice = 2 * remainder
        if twice > 10**-shift or (twice == 10**-shift and converted % 2 == 1):
            converted += 1
    if converted <= 0:
        return types.Rejection(code="amount_too_small", message="The amount is less than one minor unit once converted.")
    if converted > I64_MAX:
        return types.Rejection(code="amount_too_large", message="The converted amount is too large.")
    return converted


# Set by configure. The engine configures every fresh instance before it
# calls convert, so each call sees exactly the operator's config.
_rates = {}


class WitWorld(wit_world.WitWorld):
    def configure(self, config: str) -> None:
        global _rates
        try:
            _rates = parse_config(config)
        except ValueError as e:
            # The error of result<_, string>: the engine refuses the config.
            raise Err(f"invalid {{name}} config: {e}")

    def convert(self, source: types.Money, target: types.Currency, transfer: types.Transfer) -> wit_world.Conversion:
        rate = _rates.get(f"{source.currency.code}/{target.code}")
        if rate is None:
            # The error of result<conversion, rejection>: the transfer is rejected with it.
            raise Err(types.Rejection(
                code="rate_not_found",
                message=f"No rate from {source.currency.code} to {target.code} is configured.",
            ))
        converted = convert_amount(source.amount_minor, source.currency.exponent, target.exponent, rate)
        if isinstance(converted, types.Rejection):
            raise Err(converted)
        return wit_world.Conversion(amount_minor=converted, rate=rate)
