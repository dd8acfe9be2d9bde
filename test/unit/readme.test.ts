// The README is the technician's first stop: it must send them to the configuration reference (which
// documents every key; see config-reference.test.ts) and name the test command CI runs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REFERENCE_PATH } from '../../src/config/reference.js';

const root = join(import.meta.dirname, '../..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

describe('README', () => {
  it('links to the generated configuration reference', () => {
    expect(readme).toContain(`](${REFERENCE_PATH})`);
  });

  it('names the test command that .ci/run runs', () => {
    const ci = readFileSync(join(root, '.ci/run'), 'utf8');
    expect(readme).toContain('npm test');
    expect(ci).toMatch(/^npm test\b/m);
  });
});
