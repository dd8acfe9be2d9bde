// Wrong-typed configuration values for every key of the schema, one key at a time: what an attacker (or a
// tired technician) can put in the file. Shared by the loader's unit sweep and the CLI's end-to-end sweep.
import { schema } from '../../src/config/schema.js';

/** What a key holds: a section of settings, a list, an object of values, or one scalar value. */
export type KeyKind = 'section' | 'list' | 'map' | 'number' | 'boolean' | 'string';

export interface SchemaKey {
  readonly key: string;
  readonly kind: KeyKind;
}

export const WRONG_VALUES = {
  object: { a: 1 },
  array: [1],
  'nested object': { a: { b: { c: 1 } } },
  number: 7,
  null: null,
  string: 'abc',
} as const;

export type WrongKind = keyof typeof WRONG_VALUES;

/** Every key of the schema, sections included, in schema order. */
export function schemaKeys(node: Record<string, unknown> = schema, prefix = ''): SchemaKey[] {
  return Object.entries(node).flatMap(([name, child]) => {
    const key = prefix ? `${prefix}.${name}` : name;
    const leaf = child as { doc?: unknown; default?: unknown };
    if (!('doc' in leaf)) return [{ key, kind: 'section' as const }, ...schemaKeys(child as Record<string, unknown>, key)];
    const value = leaf.default;
    const kind: KeyKind = Array.isArray(value) ? 'list' : typeof value === 'object' && value !== null ? 'map' : (typeof value as 'number' | 'boolean' | 'string');
    return [{ key, kind }];
  });
}

/** The kinds of value that are of the wrong type for a key (a number for a number key is not). */
export function wrongKindsFor(kind: KeyKind): WrongKind[] {
  const all = Object.keys(WRONG_VALUES) as WrongKind[];
  const fitting: Record<KeyKind, readonly WrongKind[]> = {
    // Objects in a section are its keys: {a: 1} is an unknown key (a warning), not a wrong type.
    section: ['object', 'nested object'],
    list: ['array'],
    map: [],
    number: ['number'],
    boolean: [],
    string: ['string'],
  };
  return all.filter((wrong) => !fitting[kind].includes(wrong));
}

/** `base` with `value` at the dotted `key` (sections created as needed, the key itself replaced). */
export function withValueAt(base: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(base);
  const path = key.split('.');
  let node = copy;
  for (const segment of path.slice(0, -1)) {
    const next = node[segment];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[segment] = {};
    node = node[segment] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
  return copy;
}

/** Every (key, wrong value) pair of the sweep. */
export function sweepCases(): Array<{ key: string; kind: KeyKind; wrong: WrongKind; value: unknown }> {
  return schemaKeys().flatMap(({ key, kind }) => wrongKindsFor(kind).map((wrong) => ({ key, kind, wrong, value: WRONG_VALUES[wrong] })));
}
