// {{name}}: a transfer-engine converter plugin.
//
// The policy: convert with a fixed rate table, {"rates": {"USD/EUR": "0.92"}}
// ("FROM/TO": one FROM unit buys that many TO units). Rates are decimal
// strings so that they stay exact. Without a "rates" key, DEFAULT_RATES
// apply. A pair with no rate is rejected with `rate_not_found`.
//
// The amount is computed in BigInt only and rounded half-to-even to the
// target currency's minor unit (2.5 -> 2, 3.5 -> 4, 2.51 -> 3).
//
// Change `convertAmount` (and `parseConfig`) to write your own rule.

const DEFAULT_RATES = { 'USD/EUR': '0.92', 'EUR/USD': '1.08' };
const I64_MAX = 2n ** 63n - 1n;

// componentize-js 0.23 hands every s64 over as an unsigned BigInt (-1
// arrives as 2^64 - 1): read each one through this.
const s64 = (value) => BigInt.asIntN(64, BigInt(value));

// "0.92" -> {mantissa: 92n, scale: 2}: the exact value, never a Number.
function parseRate(text) {
  const match = typeof text === 'string' ? /^([0-9]+)(?:\.([0-9]{1,18}))?$/.exec(text) : null;
  if (!match) throw `${JSON.stringify(text)} is not a decimal rate such as "0.92" (at most 18 decimals)`;
  const fraction = match[2] ?? '';
  const mantissa = BigInt(match[1] + fraction);
  if (mantissa <= 0n || mantissa > I64_MAX) throw `the rate ${text} must be positive and fit in 64 bits`;
  return { mantissa, scale: fraction.length };
}

function parseConfig(text) {
  const config = JSON.parse(text);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw 'expected a JSON object';
  // Unknown keys are refused, so that a misspelt key cannot silently leave the defaults in force.
  for (const key of Object.keys(config)) {
    if (key !== 'rates') throw `unknown key "${key}"; the one key is "rates"`;
  }
  const given = config.rates ?? DEFAULT_RATES;
  if (given === null || typeof given !== 'object' || Array.isArray(given)) throw 'rates must be an object such as {"USD/EUR": "0.92"}';
  const rates = new Map();
  for (const [pair, rate] of Object.entries(given)) {
    if (!/^[A-Z]{3}\/[A-Z]{3}$/.test(pair)) throw `"${pair}" is not a currency pair such as "USD/EUR"`;
    rates.set(pair, parseRate(rate));
  }
  return rates;
}

// amount * rate, in the target's minor units, rounded half-to-even.
// Returns the amount (a BigInt), or a rejection {code, message}.
function convertAmount(amountMinor, fromExponent, toExponent, rate) {
  // The exact result is amount * mantissa * 10^shift minor units.
  const shift = toExponent - fromExponent - rate.scale;
  const product = amountMinor * rate.mantissa;
  let converted;
  if (shift >= 0) {
    converted = product * 10n ** BigInt(shift);
  } else {
    const divisor = 10n ** BigInt(-shift);
    converted = product / divisor;
    const twice = 2n * (product % divisor);
    if (twice > divisor || (twice === divisor && converted % 2n === 1n)) converted += 1n;
  }
  if (converted <= 0n) return { code: 'amount_too_small', message: 'The amount is less than one minor unit once converted.' };
  if (converted > I64_MAX) return { code: 'amount_too_large', message: 'The converted amount is too large.' };
  return converted;
}

// Set by configure. The engine configures every fresh instance before it
// calls convert, so each call sees exactly the operator's config.
let rates = new Map();

export function configure(config) {
  try {
    rates = parseConfig(config);
  } catch (e) {
    // A thrown string is the error of result<_, string>: the engine refuses the config.
    throw `invalid {{name}} config: ${e instanceof Error ? e.message : e}`;
  }
}

export function convert(source, target, _transfer) {
  const rate = rates.get(`${source.currency.code}/${target.code}`);
  if (rate === undefined) {
    // A thrown {code, message} is the error of result<conversion, rejection>: the transfer is rejected with it.
    throw { code: 'rate_not_found', message: `No rate from ${source.currency.code} to ${target.code} is configured.` };
  }
  const converted = convertAmount(s64(source.amountMinor), source.currency.exponent, target.exponent, rate);
  if (typeof converted !== 'bigint') throw converted;
  return { amountMinor: converted, rate };
}
