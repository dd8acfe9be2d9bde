// docs/configuration.md is the technician's configuration reference. It is generated from the schema
// (src/config/reference.ts), so it documents every key as long as it is regenerated: these tests fail when
// the committed file is stale, and say which command brings it up to date.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { anchorOf, configurationReference, REFERENCE_COMMAND, REFERENCE_PATH } from '../../src/config/reference.js';
import { SETTINGS } from '../../src/config/schema.js';

const root = join(import.meta.dirname, '../..');
const onDisk = readFileSync(join(root, REFERENCE_PATH), 'utf8');

/** The first line where two texts differ, for a message that says where the file is stale. */
function firstDifference(a: string, b: string): string {
  const left = a.split('\n');
  const right = b.split('\n');
  const line = left.findIndex((text, index) => text !== right[index]);
  const at = line === -1 ? left.length : line;
  return `line ${at + 1}: committed ${JSON.stringify(left[at] ?? '(end of file)')}, schema says ${JSON.stringify(right[at] ?? '(end of file)')}`;
}

describe(REFERENCE_PATH, () => {
  it('is what the schema generates', () => {
    const fresh = configurationReference();
    const verdict = onDisk === fresh ? 'up to date' : `stale at ${firstDifference(onDisk, fresh)}; run "${REFERENCE_COMMAND}" and commit ${REFERENCE_PATH}`;
    expect(verdict).toBe('up to date');
  });

  it.each([...SETTINGS].map(([key, setting]) => ({ key, setting })))('documents $key with its default, variable and meaning', ({ key, setting }) => {
    const heading = new RegExp(`^#{2,3} \`${key.replace(/\./g, '\\.')}\`$`, 'm');
    const at = onDisk.search(heading);
    expect(at, `no heading for ${key}`).toBeGreaterThan(0);
    const section = onDisk.slice(at).split(/\n(?=#{2,3} )/)[0];
    expect(section).toContain(`- Default: \`${JSON.stringify(setting.default)}\``);
    expect(section).toContain(`- Environment: \`${setting.env}\``);
    expect(section).toContain(setting.doc.slice(0, 40).replace(/</g, '&lt;').replace(/>/g, '&gt;'));
    expect(onDisk).toContain(`| [\`${key}\`](#${anchorOf(key)}) |`);
  });
});
