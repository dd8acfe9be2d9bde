// convict's complaints reworded for a technician: the key, what is expected with an example, and the
// value as the file or the environment gave it (never a secret's).
import { SETTINGS } from './schema.js';
import { isPlainObject, showValue } from './shape.js';

/**
 * convict's message for one key, reworded for a technician: the key, what is expected with an example
 * (the default), and the value as written in the file or environment — never a secret's.
 */
export function describeConvictError(
  line: string,
  sources: { readonly env: NodeJS.ProcessEnv; readonly file: Record<string, unknown> },
): string {
  const match = /^([\w.]+): (.*?)(?:: value was .*)?$/.exec(line);
  const key = match?.[1];
  const message = match?.[2];
  if (key === undefined || message === undefined) return line;
  const envName = SETTINGS.get(key)?.env;
  const fromEnv = envName ? sources.env[envName] : undefined;
  let shown: string;
  if (SETTINGS.get(key)?.sensitive) shown = fromEnv === undefined ? '(hidden)' : `(hidden) from ${envName}`;
  else if (fromEnv !== undefined) shown = `${showValue(fromEnv)} from ${envName}`;
  else shown = showValue(valueAt(sources.file, key));
  const expected = message
    .replace(/^\s*should be of type/, 'must be of type')
    .replace(/^ports must be within range 0 - 65535/, 'must be a port number from 0 to 65535')
    .replace(/must be one of the possible values: (.*)$/, (_all, list: string) => `must be one of ${list.replace(/^\[|\]$/g, '').split(',').join(', ')}`)
    .replace(/must be one of: \[(.*)\]$/, (_all, list: string) => `must be one of ${list.split(',').join(', ')}`);
  const fallback = defaultOf(key);
  const example = /e\.g\./.test(expected) || fallback === undefined || fallback === '' ? '' : `, e.g. ${JSON.stringify(fallback)}`;
  const alsoEnv = envName && fromEnv === undefined ? `; also settable with ${envName}` : '';
  return `${key}: ${expected}${example} (got ${shown}${alsoEnv})`;
}

export function valueAt(tree: Record<string, unknown>, key: string): unknown {
  let node: unknown = tree;
  for (const segment of key.split('.')) {
    // Own keys only: "constructor" must not find Object.prototype's.
    if (!isPlainObject(node) || !Object.hasOwn(node, segment)) return undefined;
    node = node[segment];
  }
  return node;
}

function defaultOf(key: string): unknown {
  const value = SETTINGS.get(key)?.default;
  return Array.isArray(value) || (value !== null && typeof value === 'object' && Object.keys(value).length === 0) ? undefined : value;
}
