// JSON worth feeding a parser, as text (so number literals and escapes stay exactly as written), and
// byte-level damage to it: shared by the device-side and the upstream-side fuzz tests.
import type { Random } from './random.js';

export const NUMBER_LITERALS = [
  '0', '-0', '1', '-1', '42', '21.5', '0.1', '1.0', '-0.0', '1e2', '1E2', '1e-7', '2e-7', '1.5e-7', '0.0000001', '1e-300', '5e-324',
  '1e21', '1E400', '-1e400', '1.7976931348623157e308', '9007199254740993', '9223372036854775807', '9223372036854775808',
  '-9223372036854775808', '-9223372036854775809', '123456789012345678901234567890', '100000000000000000000', '0e0', '1.7e12',
];
export const STRING_PIECES = [
  'temp', 'a', '', ' ', 'ü', 'e\u0301', '日本', '🌡', '\u202e', '\ufeff', '\uffff', '\\u0000', '\\ud800', '\\udfff', '\\ud83c\\udf21', '\\n', '\\t',
  '\\"', '\\\\', '\\/', '__proto__', 'constructor', 'ts', 'values', 'method', 'params', 'deleted', '%s%n', '${x}', '<script>', 'NaN', 'null',
];
export const TS_LITERALS = ['1700000000000', '0', '-1', '1.5', '"1700000000000"', '"17e11"', '1e21', '9007199254740993', '"9999999999999999"', '"0001"', 'null', '"abc"', '1.7e12', 'true', '[]', '{}'];

export function stringLiteral(random: Random, maxPieces = 4): string {
  let text = '';
  for (let i = random.int(0, maxPieces); i > 0; i--) text += random.pick(STRING_PIECES);
  return `"${text}"`;
}

export function jsonValue(random: Random, depth: number): string {
  const roll = random.next();
  if (depth > 4 || roll < 0.3) return random.pick(NUMBER_LITERALS);
  if (roll < 0.5) return stringLiteral(random);
  if (roll < 0.6) return random.pick(['true', 'false', 'null']);
  if (roll < 0.75) return `[${Array.from({ length: random.int(0, 4) }, () => jsonValue(random, depth + 1)).join(',')}]`;
  return jsonObject(random, depth + 1);
}

export function jsonObject(random: Random, depth: number, keys = random.int(0, 5)): string {
  const members = Array.from({ length: keys }, () => `${stringLiteral(random, 2)}:${jsonValue(random, depth)}`);
  return `{${members.join(',')}}`;
}

export function deepNesting(random: Random): string {
  const depth = random.pick([30, 31, 32, 33, 34, 64, 1000, 4000]);
  return random.chance(0.5) ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

export function huge(random: Random): Buffer {
  const length = random.pick([1200, 5000, 16_000, 16_384, 20_000]);
  switch (random.int(0, 3)) {
    case 0:
      return Buffer.from(`{"big":"${'x'.repeat(length)}"}`);
    case 1: // Invalid UTF-8 in a string: refused (4.00), never sent upstream as U+FFFD.
      return Buffer.concat([Buffer.from('{"ff":"'), Buffer.alloc(length, 0xff), Buffer.from('"}')]);
    case 2:
      return Buffer.from(`{${Array.from({ length: Math.floor(length / 12) }, (_, i) => `"k${i}":${i}`).join(',')}}`);
    default:
      return Buffer.from(`[${Array.from({ length: Math.floor(length / 40) }, (_, i) => `{"ts":${1700000000000 + i},"values":{"v":${i}}}`).join(',')}]`);
  }
}

/** Byte-level damage to a valid text. */
export function mutate(random: Random, text: Buffer): Buffer {
  const bytes = Buffer.from(text);
  switch (random.int(0, 7)) {
    case 0:
      return bytes.subarray(0, random.int(0, bytes.length));
    case 1:
      for (let i = random.int(1, 3); i > 0 && bytes.length > 0; i--) bytes[random.int(0, bytes.length - 1)] = random.int(0, 255);
      return bytes;
    case 2: {
      const at = random.int(0, bytes.length);
      return Buffer.concat([bytes.subarray(0, at), random.bytes(random.int(1, 4)), bytes.subarray(at)]);
    }
    case 3:
      return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]);
    case 4: {
      const at = random.int(0, bytes.length);
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at)]).subarray(0, Math.max(0, bytes.length - 1));
    }
    case 5:
      return Buffer.from(bytes.toString('latin1').replace(/[0-9]/, 'e'), 'latin1');
    case 6:
      return Buffer.from(bytes.toString().replace(/}$/, ',}'));
    default:
      return Buffer.concat([bytes, bytes]);
  }
}
