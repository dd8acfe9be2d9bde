import { writeJson } from './payload/json-text.js';

// JSON from outside the gateway (devices, ThingsBoard's rule chains and dashboards) handled so that no
// input can crash the process or change an object's prototype:
// - V8's JSON.parse is iterative and takes any depth, but JSON.stringify recurses and overflows the stack
//   at about 4,000–5,000 levels; so depth is measured on the text, before anything walks the value.
// - JSON.parse makes "__proto__" an own key, but `record[key] = value` with that key replaces the
//   prototype instead, and the key is lost: records filled from outside keys have no prototype.

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth` (a top-level object is depth 1).
 * A scan of the bytes, without parsing or recursion; brackets inside strings do not count.
 */
export function nestsDeeperThan(text: Buffer, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const byte = text[i]!;
    if (inString) {
      if (byte === 0x5c /* \ */) i++;
      else if (byte === 0x22 /* " */) inString = false;
    } else if (byte === 0x22) {
      inString = true;
    } else if (byte === 0x5b /* [ */ || byte === 0x7b /* { */) {
      if (++depth > maxDepth) return true;
    } else if (byte === 0x5d /* ] */ || byte === 0x7d /* } */) {
      depth--;
    }
  }
  return false;
}

/**
 * JSON text that never throws: undefined for a value it cannot encode (too deep, a cycle, a BigInt). A
 * device's large integers keep their digits (writeJson).
 */
export function encodeJson(value: unknown): string | undefined {
  try {
    return writeJson(value);
  } catch {
    return undefined;
  }
}

/** An empty record for keys that come from outside: "__proto__" stays an ordinary key in it. */
export function keyedRecord<V>(): Record<string, V> {
  return Object.create(null) as Record<string, V>;
}
