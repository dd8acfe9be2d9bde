// The README is the technician's reference: it must document every configuration key, its default and
// its environment variable, and name the test command CI runs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { schema } from '../../src/config/schema.js';

const root = join(import.meta.dirname, '../..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function leaves(node: Record<string, unknown>, prefix = ''): Array<{ key: string; env: string; default: unknown }> {
  return Object.entries(node).flatMap(([name, child]) => {
    const key = prefix ? `${prefix}.${name}` : name;
    const value = child as Record<string, unknown>;
    return 'doc' in value && 'default' in value ? [{ key, env: String(value.env), default: value.default }] : leaves(value, key);
  });
}

describe('README', () => {
  it.each(leaves(schema))('documents $key with its default and $env', ({ key, env, default: value }) => {
    expect(readme).toContain(`| \`${key}\` | \`${JSON.stringify(value)}\` | \`${env}\` |`);
  });

  it('names the test command that .ci/run runs', () => {
    const ci = readFileSync(join(root, '.ci/run'), 'utf8');
    expect(readme).toContain('npm test');
    expect(ci).toMatch(/^npm test\b/m);
  });
});
