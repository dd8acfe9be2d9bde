// Keys given twice in one object of a JSON5 text. JSON5 (like JSON.parse) keeps the last silently, so a
// second `devices: [...]` block at the end of a long file would drop every device of the first without a
// word. The text has already been parsed, so this scanner only needs to tell strings, comments and
// punctuation apart; keys are decoded by JSON5 itself.
import JSON5 from 'json5';

export interface DuplicateKey {
  /** Where, as the error lines name keys: "coap.port", "devices[0].token". */
  readonly key: string;
  /** Line (from 1) of the occurrence that counts, the last. */
  readonly line: number;
}

interface Container {
  readonly path: string;
  /** Keys seen so far (objects), undefined for arrays. */
  readonly keys: Set<string> | undefined;
  index: number;
  expectingKey: boolean;
  /** The key (or [index]) of the value being read, for the path of a nested container. */
  current: string;
}

const PUNCTUATION = new Set(['{', '}', '[', ']', ':', ',']);

export function duplicateKeys(text: string): DuplicateKey[] {
  const found: DuplicateKey[] = [];
  const stack: Container[] = [];
  let line = 1;
  let at = 0;
  const open = (keys: Set<string> | undefined): void => {
    const parent = stack[stack.length - 1];
    const path = parent ? joinPath(parent.path, parent.current) : '';
    stack.push({ path, keys, index: 0, expectingKey: keys !== undefined, current: keys ? '' : '[0]' });
  };
  while (at < text.length) {
    const char = text[at]!;
    if (char === '\n') line++;
    if (char === ' ' || char === '\n' || char === '\t' || char === '\r' || /\s|\uFEFF/.test(char)) {
      at++;
    } else if (text.startsWith('//', at)) {
      const end = text.indexOf('\n', at);
      at = end === -1 ? text.length : end;
    } else if (text.startsWith('/*', at)) {
      const end = text.indexOf('*/', at + 2);
      const stop = end === -1 ? text.length : end + 2;
      line += countLines(text, at, stop);
      at = stop;
    } else if (PUNCTUATION.has(char)) {
      const top = stack[stack.length - 1];
      if (char === '{') open(new Set());
      else if (char === '[') open(undefined);
      else if (char === '}' || char === ']') stack.pop();
      else if (char === ',' && top) {
        if (top.keys) top.expectingKey = true;
        else top.current = `[${++top.index}]`;
      }
      at++;
    } else {
      // A string, or a bare word (identifier key, number, true, null, ...).
      const end = char === '"' || char === "'" ? stringEnd(text, at) : wordEnd(text, at);
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectingKey) {
        const key = decodeKey(text.slice(at, end));
        if (top.keys.has(key)) found.push({ key: joinPath(top.path, key), line });
        top.keys.add(key);
        top.current = key;
        top.expectingKey = false;
      }
      line += countLines(text, at, end);
      at = end;
    }
  }
  return found;
}

function joinPath(path: string, key: string): string {
  if (key.startsWith('[')) return `${path}${key}`;
  return path === '' ? key : `${path}.${key}`;
}

const DOUBLE_QUOTED = /"(?:[^"\\]|\\[\s\S])*"?/y;
const SINGLE_QUOTED = /'(?:[^'\\]|\\[\s\S])*'?/y;
const WORD = /[^\s,:{}[\]"'/]*/y;

function stringEnd(text: string, start: number): number {
  const pattern = text[start] === '"' ? DOUBLE_QUOTED : SINGLE_QUOTED;
  pattern.lastIndex = start;
  pattern.exec(text);
  return pattern.lastIndex;
}

function wordEnd(text: string, start: number): number {
  WORD.lastIndex = start + 1;
  WORD.exec(text);
  return Math.max(WORD.lastIndex, start + 1);
}

function decodeKey(token: string): string {
  if (/^[\w$]+$/.test(token)) return token;
  if (/^(["'])[^\\]*\1$/.test(token)) return token.slice(1, -1);
  try {
    // Quoted or escaped: JSON5 decodes it exactly as it did when parsing the file.
    return Object.keys(JSON5.parse<Record<string, unknown>>(`{${token}: 0}`))[0] ?? token;
  } catch {
    return token;
  }
}

function countLines(text: string, from: number, to: number): number {
  let lines = 0;
  for (let at = from; at < to; at++) if (text.charCodeAt(at) === 10) lines++;
  return lines;
}
