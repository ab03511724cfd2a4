// {{name}}: a transfer-engine validator plugin.
//
// The policy: refuse a transfer whose amount is over `max_amount_minor`, in
// minor units of the transfer's currency (the config's one key; default
// 100000, that is 1000.00 EUR). Config example: {"max_amount_minor": 50000}.
//
// Change `check` (and `parseConfig`) to write your own rule. Money is
// integer minor units held in BigInt; never in a Number (a double).

const DEFAULT_MAX_AMOUNT_MINOR = 100000n;

// componentize-js 0.23 hands every s64 over as an unsigned BigInt (-1
// arrives as 2^64 - 1): read each one through this.
const s64 = (value) => BigInt.asIntN(64, BigInt(value));

function parseConfig(text) {
  const config = JSON.parse(text);
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw 'expected a JSON object';
  // Unknown keys are refused, so that a misspelt key cannot silently leave the default in force.
  for (const key of Object.keys(config)) {
    if (key !== 'max_amount_minor') throw `unknown key "${key}"; the one key is "max_amount_minor"`;
  }
  const limit = config.max_amount_minor ?? DEFAULT_MAX_AMOUNT_MINOR;
  if (typeof limit === 'bigint') return limit;
  // JSON.parse reads numbers as doubles: only a safe integer is exact, and 2^53 - 1
  // minor units is far above any limit. Anything else is refused, never rounded.
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw 'max_amount_minor must be a whole number of minor units, 0 to 9007199254740991';
  }
  return BigInt(limit);
}

// Minor units as a decimal: (123456n, 2) is "1234.56". BigInt only.
function formatMinor(amountMinor, exponent) {
  const digits = (amountMinor < 0n ? -amountMinor : amountMinor).toString().padStart(exponent + 1, '0');
  const sign = amountMinor < 0n ? '-' : '';
  if (exponent === 0) return sign + digits;
  return `${sign}${digits.slice(0, -exponent)}.${digits.slice(-exponent)}`;
}

// The rule itself: null to allow, or a rejection {code, message}.
function check(limit, amountMinor, currency) {
  if (amountMinor > limit) {
    const { code, exponent } = currency;
    return {
      code: 'amount_over_limit',
      message: `The amount ${formatMinor(amountMinor, exponent)} ${code} is over the limit of ${formatMinor(limit, exponent)} ${code} per transfer.`,
    };
  }
  return null;
}

// Set by configure. The engine configures every fresh instance before it
// calls validate, so each call sees exactly the operator's config.
let limit = DEFAULT_MAX_AMOUNT_MINOR;

export function configure(config) {
  try {
    limit = parseConfig(config);
  } catch (e) {
    // A thrown string is the error of result<needs, string>: the engine refuses the config.
    throw `invalid {{name}} config: ${e instanceof Error ? e.message : e}`;
  }
  // This rule reads only the transfer itself: no accounts, no velocity windows.
  return { accounts: false, velocityWindowsSeconds: [] };
}

export function validate(transfer, _context) {
  // Always present for validation; refuse rather than guess.
  if (transfer.amountMinor === undefined || transfer.amountMinor === null) {
    return { tag: 'reject', val: { code: 'amount_missing', message: 'The transfer has no amount.' } };
  }
  const rejection = check(limit, s64(transfer.amountMinor), transfer.currency);
  return rejection === null ? { tag: 'allow' } : { tag: 'reject', val: rejection };
}
