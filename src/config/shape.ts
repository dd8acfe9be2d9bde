// The parsed configuration file checked against the schema's shape before convict sees any of it.
//
// convict's load() decides between "setting" and "section" by looking at the value, not at the schema: an
// object where a setting belongs is walked into as if it were a section, looking up children in a leaf
// that has none (the TypeError at convict/src/main.js:367 for {"a": {"b": 1}}), or merged key by key into
// the setting's default (so `devices: {"a": 1}` left an empty list with a property "a": silently no
// devices). Here every value is matched to its schema node first; convict then only ever receives known
// settings, one by one and whole (config.set), whose values it can validate and explain.

/** No setting is deeper than devices[].psk.identity (4 levels); anything far deeper is an attack or a mistake. */
export const MAX_DEPTH = 32;

type Tree = Record<string, unknown>;
type SchemaNode = Record<string, unknown>;

/**
 * A key inside an object-valued setting (log.components): convict flattens those objects into dotted
 * paths, so "a.b" would be looked up as a path, and "__proto__" would find the prototype.
 */
export const SETTING_NAME = /^[a-z][\w-]*$/i;

export function isPlainObject(value: unknown): value is Tree {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function isSetting(node: SchemaNode): boolean {
  return 'doc' in node && 'default' in node;
}

/** A key or a path cut to a readable length, since it ends up in one log line. */
export function shorten(text: string): string {
  return text.length > 64 ? `${text.slice(0, 40)}…` : text;
}

/**
 * A value as an error line shows it: as written when short, else cut ("abc…" (100000 characters)) or
 * summed up (a list of 3 items), since a line in a log or a terminal must stay one line.
 */
export function showValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return value.length > 60 ? `${JSON.stringify(`${value.slice(0, 40)}…`)} (${value.length} characters)` : JSON.stringify(value);
  if (value === null || typeof value !== 'object') return String(value);
  const text = tooDeep(value, 4) === undefined ? JSON.stringify(value) : undefined;
  if (text !== undefined && text.length <= 60) return text;
  if (Array.isArray(value)) return `a list of ${value.length} item(s)`;
  const keys = Object.keys(value);
  return `an object with ${keys.slice(0, 3).map((key) => JSON.stringify(shorten(key))).join(', ')}${keys.length > 3 ? `, … (${keys.length} keys)` : ''}`;
}

/**
 * The path of the first value nested deeper than `maxDepth` (e.g. "a.a.a…"), or undefined. Iterative, so
 * a document nested 20,000 deep is measured without overflowing the stack that JSON5 did not need.
 */
export function tooDeep(value: unknown, maxDepth = MAX_DEPTH): string | undefined {
  const stack: Array<{ value: unknown; depth: number; path: readonly string[] }> = [{ value, depth: 0, path: [] }];
  for (let next = stack.pop(); next; next = stack.pop()) {
    if (next.value === null || typeof next.value !== 'object') continue;
    if (next.depth >= maxDepth) return showPath(next.path);
    const children = Array.isArray(next.value) ? next.value.map((child, index) => [`[${index}]`, child] as const) : Object.entries(next.value);
    for (const [name, child] of children) {
      // Paths are kept only as far as they are shown.
      const path = next.path.length < 8 ? [...next.path, name] : next.path;
      stack.push({ value: child, depth: next.depth + 1, path });
    }
  }
  return undefined;
}

function showPath(segments: readonly string[]): string {
  let path = '';
  for (const segment of segments) path += segment.startsWith('[') ? segment : `${path === '' ? '' : '.'}${shorten(segment)}`;
  return `${path}…`;
}

/**
 * Removes every own "__proto__" key (JSON5 and JSON.parse make them ordinary keys) and returns where they
 * were. convict copies values with lodash.clonedeep, which turns such a key into the object's prototype:
 * a device {"name": "A", "__proto__": {"token": "x"}} would have got the token "x" without saying so.
 * Call it on a document already known not to be too deep.
 */
export function dropPrototypeKeys(value: unknown, path = '', found: string[] = []): string[] {
  if (value === null || typeof value !== 'object') return found;
  if (!Array.isArray(value) && Object.hasOwn(value, '__proto__')) {
    delete (value as Tree)['__proto__'];
    found.push(path === '' ? '__proto__' : `${path}.__proto__`);
  }
  // An accumulator, not push(...list): spreading 300,000 paths overflows the stack.
  if (Array.isArray(value)) value.forEach((child, index) => dropPrototypeKeys(child, `${path}[${index}]`, found));
  else for (const [name, child] of Object.entries(value)) dropPrototypeKeys(child, path === '' ? name : `${path}.${name}`, found);
  return found;
}

export interface Shaped {
  /** Known settings present in the document, with values of a shape convict can validate. */
  readonly settings: ReadonlyArray<{ readonly key: string; readonly value: unknown }>;
  /** Values of the wrong shape, with what their setting expects (in convict's words). */
  readonly errors: ReadonlyArray<{ readonly key: string; readonly message: string }>;
  /** Keys the schema does not know, as convict names them (down to the leaves of unknown objects). */
  readonly unknownKeys: readonly string[];
}

/**
 * Matches `document` against `schema`. `expected(key, value)` gives the setting's own complaint about a
 * value of the wrong shape (its convict format's message), so these errors read like convict's.
 */
export function checkShape(document: Tree, schema: SchemaNode, expected: (key: string, value: unknown) => string): Shaped {
  const settings: Array<{ key: string; value: unknown }> = [];
  const errors: Array<{ key: string; message: string }> = [];
  const unknownKeys: string[] = [];
  const walk = (section: Tree, node: SchemaNode, prefix: string): void => {
    for (const [name, value] of Object.entries(section)) {
      const key = prefix === '' ? name : `${prefix}.${name}`;
      // Own keys only: "constructor" or "toString" must not find Object.prototype's.
      const child = Object.hasOwn(node, name) ? (node[name] as SchemaNode) : undefined;
      if (!child) leavesOf(value, key, unknownKeys);
      else if (!isSetting(child)) {
        if (isPlainObject(value)) walk(value, child, key);
        else errors.push({ key, message: `must be an object of settings, e.g. ${sectionExample(child)}` });
      } else if (fitsShape(child.default, value)) settings.push({ key, value });
      else errors.push({ key, message: expected(key, value) });
    }
  };
  walk(document, schema, '');
  return { settings, errors, unknownKeys };
}

/**
 * What convict can be handed whole: a scalar (its format explains a wrong one), a list where a list
 * belongs, a flat object of scalars where an object of values belongs (log.components). Anything else
 * convict would walk into, or flatten into keys it then calls missing.
 */
export function fitsShape(fallback: unknown, value: unknown): boolean {
  if (!isPlainObject(value)) return true;
  if (!isPlainObject(fallback)) return false;
  return Object.entries(value).every(([name, child]) => SETTING_NAME.test(name) && (child === null || typeof child !== 'object'));
}

/** Unknown keys as convict reported them: the leaves of an unknown object, e.g. "upstrem.url". */
function leavesOf(value: unknown, key: string, into: string[]): void {
  if (!isPlainObject(value) || Object.keys(value).length === 0) into.push(key);
  else for (const [name, child] of Object.entries(value)) leavesOf(child, `${key}.${name}`, into);
}

/** {"host": "::", "port": 5683}: a section's first two settings with their defaults. */
function sectionExample(node: SchemaNode): string {
  const entries = Object.entries(node)
    .filter(([, child]) => isSetting(child as SchemaNode))
    .slice(0, 2)
    .map(([name, child]) => `${JSON.stringify(name)}: ${JSON.stringify((child as { default: unknown }).default)}`);
  return `{${entries.join(', ')}}`;
}

/** "line 3, column 7: invalid character ..." from JSON5's parse error. */
export function describeSyntaxError(error: unknown): string {
  const { lineNumber, columnNumber, message } = error as SyntaxError & { lineNumber?: number; columnNumber?: number };
  const where = lineNumber !== undefined ? `line ${lineNumber}, column ${columnNumber}: ` : '';
  return `${where}${message.replace(/^JSON5: /, '')}`;
}
