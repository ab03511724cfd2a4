// `limits`, in JavaScript: a validator that refuses transfers over a
// per-currency maximum amount, or from or to a blocked owner.
//
// The same config, verdicts, codes and messages as the Rust `limits`
// (../limits/src/policy.rs); the engine's tests/plugin_parity.rs runs the
// three ports side by side and asserts they agree.
//
// Built with componentize-js against wit/plugin.wit (interface 0.2.0):
// plugins/build.sh does it. Money stays exact: every amount is a BigInt,
// never a Number (a double).

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

// componentize-js 0.23 hands over s64 values as unsigned BigInts (-1 arrives
// as 2^64 - 1); this reads them back as the signed values they are.
const s64 = (value) => BigInt.asIntN(64, BigInt(value));

class ConfigError extends Error {}

// JSON.parse turns every number into a double, which cannot hold every i64
// exactly, so the config is read by this small strict parser instead: the
// same grammar, integers as BigInt, any fraction or exponent refused (as the
// Rust port's serde_json refuses them for an i64).
function parseJson(text) {
  let at = 0;
  const fail = (what) => {
    throw new ConfigError(`invalid limits config: ${what} at character ${at}`);
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at])) at += 1;
  };
  const expect = (literal) => {
    if (text.startsWith(literal, at)) at += literal.length;
    else fail(`expected ${literal}`);
  };
  const string = () => {
    expect('"');
    let out = '';
    for (;;) {
      if (at >= text.length) fail('unterminated string');
      const c = text[at++];
      if (c === '"') return out;
      if (c < ' ') fail('control character in string');
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = text[at++];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) out += simple;
      else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(at, at + 4))) {
        out += String.fromCharCode(parseInt(text.slice(at, at + 4), 16));
        at += 4;
      } else fail('bad escape');
    }
  };
  const number = () => {
    const match = /^-?(0|[1-9][0-9]*)([.eE][-+0-9.eE]*)?/.exec(text.slice(at));
    if (!match) fail('bad value');
    if (match[2] !== undefined) fail(`${match[0]} is not an integer (amounts are minor units)`);
    at += match[0].length;
    return BigInt(match[0]);
  };
  const value = () => {
    space();
    const c = text[at];
    if (c === '{') {
      at += 1;
      const object = new Map();
      space();
      if (text[at] === '}') {
        at += 1;
        return object;
      }
      for (;;) {
        space();
        const key = string();
        if (object.has(key)) fail(`a key is given twice (${key})`);
        space();
        expect(':');
        object.set(key, value());
        space();
        if (text[at] === ',') at += 1;
        else {
          expect('}');
          return object;
        }
      }
    }
    if (c === '[') {
      at += 1;
      const array = [];
      space();
      if (text[at] === ']') {
        at += 1;
        return array;
      }
      for (;;) {
        array.push(value());
        space();
        if (text[at] === ',') at += 1;
        else {
          expect(']');
          return array;
        }
      }
    }
    if (c === '"') return string();
    if (text.startsWith('true', at)) return (at += 4), true;
    if (text.startsWith('false', at)) return (at += 5), false;
    if (text.startsWith('null', at)) return (at += 4), null;
    return number();
  };
  const parsed = value();
  space();
  if (at !== text.length) fail('trailing characters');
  return parsed;
}

const isI64 = (v) => typeof v === 'bigint' && v >= I64_MIN && v <= I64_MAX;
const isCurrencyCode = (code) => /^[A-Z]{3}$/.test(code);

function parseConfig(text) {
  const raw = parseJson(text);
  if (!(raw instanceof Map)) throw new ConfigError('invalid limits config: expected an object');
  for (const key of raw.keys()) {
    if (key !== 'max_amount_minor' && key !== 'blocked_owners') {
      throw new ConfigError(`invalid limits config: unknown field \`${key}\`, expected \`max_amount_minor\` or \`blocked_owners\``);
    }
  }
  const limits = raw.get('max_amount_minor') ?? new Map();
  if (!(limits instanceof Map)) {
    throw new ConfigError('invalid limits config: max_amount_minor must be an object of currency code to integer');
  }
  for (const [currency, limit] of limits) {
    if (!isI64(limit)) throw new ConfigError(`invalid limits config: max_amount_minor for ${currency} must be an integer (minor units)`);
  }
  for (const [currency, limit] of limits) {
    if (!isCurrencyCode(currency)) {
      throw new ConfigError(
        `invalid limits config: "${currency}" in max_amount_minor is not a currency code (three upper-case letters, for example "EUR")`,
      );
    }
    if (limit < 0n) {
      throw new ConfigError(`invalid limits config: max_amount_minor for ${currency} is ${limit}, but a limit cannot be negative`);
    }
  }
  const blocked = raw.get('blocked_owners') ?? [];
  if (!Array.isArray(blocked) || !blocked.every(isI64)) {
    throw new ConfigError('invalid limits config: blocked_owners must be a list of integer owner ids');
  }
  return { maxAmountMinor: limits, blockedOwners: new Set(blocked) };
}

// Minor units as a plain decimal in major units: (123456, 2) is "1234.56",
// (5, 3) is "0.005". BigInt only.
function formatMinor(amountMinor, exponent) {
  const digits = (amountMinor < 0n ? -amountMinor : amountMinor).toString();
  const sign = amountMinor < 0n ? '-' : '';
  if (exponent === 0) return sign + digits;
  const padded = digits.padStart(exponent + 1, '0');
  return `${sign}${padded.slice(0, -exponent)}.${padded.slice(-exponent)}`;
}

const reject = (code, message) => ({ tag: 'reject', val: { code, message } });

let limits = { maxAmountMinor: new Map(), blockedOwners: new Set() };

export function configure(config) {
  try {
    limits = parseConfig(config);
  } catch (e) {
    // A string thrown from a function returning result<_, string> is its error.
    throw e instanceof ConfigError ? e.message : `invalid limits config: ${e}`;
  }
  // The facts of the transfer itself are enough: no context.
  return { accounts: false, velocityWindowsSeconds: [] };
}

export function validate(transfer, _context) {
  for (const [side, ownerId] of [
    ['sender', s64(transfer.senderId)],
    ['receiver', s64(transfer.receiverId)],
  ]) {
    if (limits.blockedOwners.has(ownerId)) {
      return reject('owner_blocked', `The ${side} (owner ${ownerId}) is on the blocked owners list.`);
    }
  }
  const currency = transfer.currency.code;
  const limit = limits.maxAmountMinor.get(currency);
  if (limit === undefined) return { tag: 'allow' };
  if (transfer.amountMinor === undefined || transfer.amountMinor === null) {
    return reject('amount_missing', `The transfer has no amount to check against the ${currency} limit per transfer.`);
  }
  const amount = s64(transfer.amountMinor);
  if (amount > limit) {
    const exponent = transfer.currency.exponent;
    return reject(
      'amount_over_limit',
      `The amount ${formatMinor(amount, exponent)} ${currency} is over the limit of ${formatMinor(limit, exponent)} ${currency} per transfer.`,
    );
  }
  return { tag: 'allow' };
}
