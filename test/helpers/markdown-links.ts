// Relative links in the project's Markdown, read the way GitHub renders them: what each file links to,
// and the anchors each file's headings get. Links inside code (fenced blocks, `spans`) are not links.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';

export interface MarkdownLink {
  readonly file: string;
  readonly line: number;
  readonly target: string;
}

/** The text with code blocks and code spans blanked out, keeping every line break so line numbers hold. */
export function withoutCode(markdown: string): string {
  // A code span may not cross a blank line; its text is replaced by spaces of the same length.
  return withoutFences(markdown).replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (span) => span.replace(/[^\n]/g, ' '));
}

/** The text with fenced code blocks blanked out (their lines kept, empty), code spans left in place. */
function withoutFences(markdown: string): string {
  const lines = markdown.split('\n');
  let fence: string | undefined;
  const kept = lines.map((line) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence === undefined && marker !== undefined) {
      fence = marker;
      return '';
    }
    if (fence !== undefined) {
      if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) fence = undefined;
      return '';
    }
    return line;
  });
  return kept.join('\n');
}

/** Inline links and images `[text](target "title")` and reference definitions `[id]: target`. */
export function linksIn(file: string, markdown: string): MarkdownLink[] {
  const text = withoutCode(markdown);
  const found: MarkdownLink[] = [];
  const lineOf = (offset: number): number => text.slice(0, offset).split('\n').length;
  for (const match of text.matchAll(/\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+"[^"]*")?\s*\)/g)) {
    found.push({ file, line: lineOf(match.index), target: match[1]!.replace(/^<|>$/g, '') });
  }
  for (const match of text.matchAll(/^ {0,3}\[[^\]]+\]:\s*(\S+)/gm)) {
    found.push({ file, line: lineOf(match.index), target: match[1]! });
  }
  return found;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[`*]/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a file offers: its headings' slugs (a repeated one gets -1, -2, ...) and explicit ids. */
export function anchorsIn(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  // Headings keep their code spans: "### `coap.host`" is #coaphost on GitHub.
  const text = withoutFences(markdown);
  for (const match of text.matchAll(/^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/gm)) {
    const base = slug(match[1]!);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const match of text.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) anchors.add(match[1]!);
  return anchors;
}

/**
 * What is wrong with one link, or undefined when it resolves. Links with a scheme are not checked; a path
 * starting with / is from the repository's root, as on GitHub.
 */
export function problemWith(link: MarkdownLink, root: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(link.target)) return undefined;
  const hash = link.target.indexOf('#');
  const path = decodeURIComponent(hash === -1 ? link.target : link.target.slice(0, hash));
  const anchor = hash === -1 ? undefined : decodeURIComponent(link.target.slice(hash + 1));
  const where = path === '' ? link.file : path.startsWith('/') ? join(root, path) : resolve(dirname(link.file), path);
  if (!existsSync(where)) return `${path} does not exist`;
  if (anchor === undefined || anchor === '') return undefined;
  if (statSync(where).isDirectory() || extname(where) !== '.md') return undefined;
  return anchorsIn(readFileSync(where, 'utf8')).has(anchor) ? undefined : `${path || 'this file'} has no heading for #${anchor}`;
}
