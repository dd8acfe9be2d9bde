// A newcomer follows the README into docs/: every relative link there must reach a file, and every
// #anchor into a Markdown file a heading that GitHub would give that anchor.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { anchorsIn, linksIn, problemWith, slug, type MarkdownLink } from '../helpers/markdown-links.js';

const root = join(import.meta.dirname, '../..');

function markdownUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.md'))
    .map((entry) => join(entry.parentPath, entry.name));
}

const files = [join(root, 'README.md'), ...markdownUnder(join(root, 'docs'))];
const links = files.flatMap((file) => linksIn(file, readFileSync(file, 'utf8'))).filter((link) => !/^[a-z][a-z0-9+.-]*:/i.test(link.target));
const named = (link: MarkdownLink): string => `${relative(root, link.file)}:${link.line} → ${link.target}`;

describe('relative links in README.md and docs/', () => {
  it('finds the pages and their links', () => {
    expect(files.map((file) => relative(root, file))).toEqual(expect.arrayContaining(['README.md', 'docs/README.md', 'docs/architecture.md']));
    expect(links.length).toBeGreaterThan(50);
    expect(links.filter((link) => link.target.includes('#')).length).toBeGreaterThan(10);
  });

  it('every one reaches a file, and a heading when it names one', () => {
    const broken = links.map((link) => [named(link), problemWith(link, root)]);
    expect(broken.filter(([, problem]) => problem !== undefined)).toEqual([]);
  });

  it('README.md links to the docs index, and the index to every page in docs/', () => {
    const readmeTargets = links.filter((link) => link.file === join(root, 'README.md')).map((link) => link.target);
    expect(readmeTargets).toContain('docs/README.md');
    const indexTargets = new Set(links.filter((link) => link.file === join(root, 'docs/README.md')).map((link) => link.target.split('#')[0]));
    const pages = markdownUnder(join(root, 'docs')).map((file) => relative(join(root, 'docs'), file)).filter((page) => page !== 'README.md');
    expect(pages.filter((page) => !indexTargets.has(page))).toEqual([]);
  });
});

describe('pointers into docs/ from comments in src/, test/ and bench/', () => {
  const sources = ['src', 'test', 'bench'].flatMap((dir) =>
    readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
      .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
      .map((entry) => join(entry.parentPath, entry.name)),
  );
  const pointers = sources.flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/\bdocs\/[\w.-]+\.md(?:#[\w-]+)?/g)].map((match) => ({ file, line: 0, target: `/${match[0]}` })),
  );

  it('each names a page that exists, and a heading in it when it names one', () => {
    expect(pointers.length).toBeGreaterThan(20);
    const broken = pointers.map((pointer) => [`${relative(root, pointer.file)} → ${pointer.target}`, problemWith(pointer, root)]);
    expect(broken.filter(([, problem]) => problem !== undefined)).toEqual([]);
  });
});

describe('the link checker', () => {
  it('gives headings the anchors GitHub gives them', () => {
    expect(slug('Is it running? `systemctl status` and the journal')).toBe('is-it-running-systemctl-status-and-the-journal');
    expect(slug('`outbox.mode: "spill"` (the default)')).toBe('outboxmode-spill-the-default');
    expect(slug('Too many requests (4.29)')).toBe('too-many-requests-429');
    expect(slug('CoAP over DTLS')).toBe('coap-over-dtls');
    expect(slug('Where [docs](docs/README.md) live: état_des_lieux')).toBe('where-docs-live-état_des_lieux');
    expect([...anchorsIn('# Notes\n## Notes\n```\n# not a heading\n```\n### Notes ##\n')]).toEqual(['notes', 'notes-1', 'notes-2']);
  });

  it('reads links the way they render: not in code, across line breaks, with titles and references', () => {
    const markdown = [
      'See [the\nguide](guide.md#start "title") and ![a picture](<img/a b.png>).',
      '`[not](a-link.md)` and',
      '```',
      '[nor](this.md)',
      '```',
      '[ref]: ../other.md',
    ].join('\n');
    expect(linksIn('/x/doc.md', markdown)).toEqual([
      { file: '/x/doc.md', line: 2, target: 'guide.md#start' },
      { file: '/x/doc.md', line: 2, target: 'img/a b.png' },
      { file: '/x/doc.md', line: 7, target: '../other.md' },
    ]);
  });

  it('reports a missing file and a missing heading, and accepts what exists', () => {
    const dir = mkdtempSync(join(tmpdir(), 'doc-links-'));
    writeFileSync(join(dir, 'page.md'), '# Page\n\n## First steps\n');
    const from = join(dir, 'index.md');
    writeFileSync(from, '# Index\n');
    const check = (target: string): string | undefined => problemWith({ file: from, line: 1, target }, dir);
    expect(check('page.md')).toBeUndefined();
    expect(check('page.md#first-steps')).toBeUndefined();
    expect(check('#index')).toBeUndefined();
    expect(check('/page.md#page')).toBeUndefined();
    expect(check('gone.md')).toBe('gone.md does not exist');
    expect(check('page.md#last-steps')).toBe('page.md has no heading for #last-steps');
    expect(check('#nowhere')).toBe('this file has no heading for #nowhere');
    expect(check('https://example.com/gone.md')).toBeUndefined();
  });
});
