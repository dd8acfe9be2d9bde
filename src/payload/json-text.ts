// JSON text from devices, read without losing anything on the way: bytes that are not UTF-8 are refused
// (never turned into U+FFFD), and integers a double cannot hold keep their digits (ExactInteger).
// Written back for ThingsBoard by writeJson, which puts those digits in the text again.
import { isUtf8 } from 'node:buffer';
import { ExactInteger } from '../model.js';

/** A JSON object as parsed, not an array and not an ExactInteger. */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof ExactInteger);

/** The text of `bytes`, or where its first byte that does not belong to valid UTF-8 is. */
export function decodeUtf8(bytes: Buffer): { readonly text: string } | { readonly invalidAt: number } {
  // isUtf8 is simdutf's validator: a few GB/s, so checking first costs next to nothing.
  return isUtf8(bytes) ? { text: bytes.toString('utf8') } : { invalidAt: firstInvalidUtf8(bytes) };
}

/** RFC 3629: no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF, no sequence cut short. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let at = 0;
  while (at < bytes.length) {
    const lead = bytes[at]!;
    if (lead < 0x80) {
      at++;
      continue;
    }
    const extra = lead >= 0xc2 && lead <= 0xdf ? 1 : lead >= 0xe0 && lead <= 0xef ? 2 : lead >= 0xf0 && lead <= 0xf4 ? 3 : 0;
    if (extra === 0 || at + extra >= bytes.length) return at;
    let codePoint = lead & (0x3f >> extra);
    for (let i = 1; i <= extra; i++) {
      const next = bytes[at + i]!;
      if ((next & 0xc0) !== 0x80) return at;
      codePoint = (codePoint << 6) | (next & 0x3f);
    }
    const smallest = extra === 1 ? 0x80 : extra === 2 ? 0x800 : 0x10000;
    if (codePoint < smallest || codePoint > 0x10ffff || (codePoint >= 0xd800 && codePoint <= 0xdfff)) return at;
    at += extra + 1;
  }
  return -1;
}

/** Nesting the exact reader follows; deeper texts are refused (every device payload allows 32 at most). */
export const MAX_READ_DEPTH = 512;

export class JsonTooDeepError extends Error {
  constructor() {
    super(`JSON nests deeper than ${MAX_READ_DEPTH} levels`);
  }
}

/** 16 digits or more at the start of a number: after the text's start, ":", "," or "[" (and spaces). */
const MAYBE_LONG_NUMBER = /(?:^|[:,[])[ \t\n\r]*-?\d{16}/;

/**
 * JSON.parse, except that an integer literal (no fraction, no exponent) beyond ±(2^53 - 1) becomes an
 * ExactInteger with its digits. Throws JSON.parse's SyntaxError, or JsonTooDeepError.
 */
export function parseJsonText(text: string): unknown {
  const value: unknown = JSON.parse(text);
  // Such an integer is a number of at least 16 digits; without one, JSON.parse lost nothing. A string
  // that merely looks like one (":1234567890123456") only costs a second, exact reading.
  return MAYBE_LONG_NUMBER.test(text) ? new ExactReader(text).read() : value;
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const SPACE = /[ \t\n\r]*/y;

/** Reads a text JSON.parse has already accepted, so it need not look for mistakes. */
class ExactReader {
  private at = 0;

  constructor(private readonly text: string) {}

  read(): unknown {
    return this.value(0);
  }

  private value(depth: number): unknown {
    if (depth > MAX_READ_DEPTH) throw new JsonTooDeepError();
    this.skipSpace();
    const text = this.text;
    switch (text[this.at]) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        this.at += 4;
        return true;
      case 'f':
        this.at += 5;
        return false;
      case 'n':
        this.at += 4;
        return null;
      default:
        return this.number();
    }
  }

  private object(depth: number): Record<string, unknown> {
    const object: Record<string, unknown> = {};
    this.at++;
    this.skipSpace();
    if (this.text[this.at] === '}') {
      this.at++;
      return object;
    }
    for (;;) {
      this.skipSpace();
      const key = this.string();
      this.skipSpace();
      this.at++; // ':'
      // As JSON.parse: an own property even for "__proto__"; a repeated key keeps its place, the last value.
      Object.defineProperty(object, key, { value: this.value(depth + 1), writable: true, enumerable: true, configurable: true });
      this.skipSpace();
      if (this.text[this.at++] === '}') return object;
    }
  }

  private array(depth: number): unknown[] {
    const array: unknown[] = [];
    this.at++;
    this.skipSpace();
    if (this.text[this.at] === ']') {
      this.at++;
      return array;
    }
    for (;;) {
      array.push(this.value(depth + 1));
      this.skipSpace();
      if (this.text[this.at++] === ']') return array;
    }
  }

  /** JSON.parse itself unescapes the literal, lone surrogates and all. */
  private string(): string {
    const start = this.at;
    let end = start + 1;
    while (this.text[end] !== '"') end += this.text[end] === '\\' ? 2 : 1;
    this.at = end + 1;
    return JSON.parse(this.text.slice(start, end + 1)) as string;
  }

  private number(): number | ExactInteger {
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text)!;
    this.at = NUMBER.lastIndex;
    const value = Number(match[0]);
    const integerLiteral = match[1] === undefined && match[2] === undefined;
    return integerLiteral && !Number.isSafeInteger(value) ? new ExactInteger(match[0]) : value;
  }

  private skipSpace(): void {
    SPACE.lastIndex = this.at;
    SPACE.exec(this.text);
    this.at = SPACE.lastIndex;
  }
}

/**
 * JSON.stringify's text, with each ExactInteger as its digits and each other number as `number` writes it
 * (which must agree with JSON.stringify on numbers written without exponent and with fewer than 16 digits).
 */
export function writeJson(value: unknown, number: (value: number) => string = JSON.stringify): string {
  const text = JSON.stringify(value);
  // Fast path: no digit before an exponent, no number of 16 digits. Every ExactInteger shows one of them
  // (its stand-in double has 16 digits or more, or an exponent), so none is in `value`.
  return /\de/.test(text) || MAYBE_LONG_NUMBER.test(text) ? writeEach(value, number) : text;
}

/** Like JSON.stringify, leaves out undefined members and writes undefined array items as null. */
function writeEach(value: unknown, number: (value: number) => string): string {
  if (typeof value === 'number') return number(value);
  if (value instanceof ExactInteger) return value.digits;
  if (Array.isArray(value)) return `[${value.map((item: unknown) => (item === undefined ? 'null' : writeEach(item, number))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const members: string[] = [];
    for (const [key, item] of Object.entries(value)) if (item !== undefined) members.push(`${JSON.stringify(key)}:${writeEach(item, number)}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value);
}
