// The size measures of issue 22, checked on every run so the house cannot quietly grow back into big rooms:
// no file in src/ over 600 lines, no function over 100 lines, no `as unknown as` in src/config (there it hides
// a schema/type mismatch the compiler should catch). Functions are measured with the TypeScript compiler's own
// parser, not regular expressions, so arrow functions, methods and constructors all count.
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const MAX_FILE_LINES = 600;
const MAX_FUNCTION_LINES = 100;

interface Measure {
  key: string;
  lines: number;
  limit: number;
  what: string;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

function lineCount(text: string): number {
  // As `wc -l` counts: a final newline does not start another line.
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
}

type FunctionNode =
  | ts.FunctionDeclaration
  | ts.MethodDeclaration
  | ts.ConstructorDeclaration
  | ts.ArrowFunction
  | ts.FunctionExpression
  | ts.GetAccessorDeclaration
  | ts.SetAccessorDeclaration;

function isFunction(node: ts.Node): node is FunctionNode {
  return (
    ts.isFunctionDeclaration(node) ||
    ts.isMethodDeclaration(node) ||
    ts.isConstructorDeclaration(node) ||
    ts.isArrowFunction(node) ||
    ts.isFunctionExpression(node) ||
    ts.isGetAccessorDeclaration(node) ||
    ts.isSetAccessorDeclaration(node)
  );
}

function nameOf(node: ts.Node): string | undefined {
  if (ts.isConstructorDeclaration(node)) return 'constructor';
  if ('name' in node && node.name !== undefined && ts.isIdentifier(node.name as ts.Node)) return (node.name as ts.Identifier).text;
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  if (ts.isPropertyAssignment(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  if (ts.isPropertyDeclaration(parent) && ts.isIdentifier(parent.name)) return parent.name.text;
  return undefined;
}

// 'Class.method', 'outer.inner' or '<anonymous line 42>' for a callback.
function qualifiedName(node: FunctionNode, file: ts.SourceFile): string {
  const parts: string[] = [];
  for (let at: ts.Node | undefined = node; at !== undefined && !ts.isSourceFile(at); at = at.parent) {
    if (isFunction(at) || ts.isClassLike(at)) {
      const name = ts.isClassLike(at) ? at.name?.text : nameOf(at);
      const line = file.getLineAndCharacterOfPosition(at.getStart(file)).line + 1;
      parts.unshift(name ?? `<anonymous line ${line}>`);
    }
  }
  return parts.join('.');
}

function spanLines(node: ts.Node, file: ts.SourceFile): number {
  const first = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
  const last = file.getLineAndCharacterOfPosition(node.getEnd()).line;
  return last - first + 1;
}

// A function's own lines: its span less the named functions nested in it (local function declarations,
// `const f = () => ...`, methods and function-valued properties of an object literal), which are measured on
// their own. So a factory that returns closures counts its own statements, and each closure is held to the
// limit separately. An anonymous callback passed inline (`list.map((x) => ...)`) stays part of the statement
// that passes it. A nested function's first line stays with its parent: it also holds the parent's `const f =`.
function ownLines(fn: FunctionNode, file: ts.SourceFile): number {
  let nested = 0;
  const visit = (node: ts.Node): void => {
    if (isFunction(node) && nameOf(node) !== undefined) {
      nested += spanLines(node, file) - 1;
      return;
    }
    ts.forEachChild(node, visit);
  };
  ts.forEachChild(fn, visit);
  return spanLines(fn, file) - nested;
}

function measure(): Measure[] {
  const measures: Measure[] = [];
  for (const path of sourceFiles(join(root, 'src'))) {
    const name = relative(root, path);
    const text = readFileSync(path, 'utf8');
    measures.push({ key: name, lines: lineCount(text), limit: MAX_FILE_LINES, what: 'file lines' });
    const file = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (isFunction(node)) {
        const key = `${name}:${qualifiedName(node, file)}`;
        measures.push({ key, lines: ownLines(node, file), limit: MAX_FUNCTION_LINES, what: 'function lines' });
      }
      ts.forEachChild(node, visit);
    };
    visit(file);
    if (name.startsWith('src/config/')) {
      const casts = text.split('as unknown as').length - 1;
      measures.push({ key: `${name}:as unknown as`, lines: casts, limit: 0, what: '`as unknown as` casts' });
    }
  }
  return measures;
}

const measures = measure();
const oversize = measures.filter((m) => m.lines > m.limit);

describe('code shape (issue 22 measures)', () => {
  it('finds the functions it is meant to measure', () => {
    // Guards the measuring itself: a parser change that found no functions would pass everything.
    const keys = new Set(measures.map((m) => m.key));
    expect(keys).toContain('src/cli.ts:main');
    expect(measures.filter((m) => m.what === 'function lines').length).toBeGreaterThan(500);
  });

  it('has no file over 600 lines, no function over 100 lines and no `as unknown as` in src/config', () => {
    const found = oversize.map((m) => `${m.key}: ${m.lines} ${m.what} (limit ${m.limit})`);
    expect(found, 'split these by concern, with names that explain themselves').toEqual([]);
  });
});
