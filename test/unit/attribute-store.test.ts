import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttributeStore } from '../../src/devices/attribute-store.js';
import { createLogger } from '../../src/log.js';
import { ExactInteger } from '../../src/model.js';

const log = createLogger('silent');
const file = () => join(mkdtempSync(join(tmpdir(), 'attr-store-')), 'attributes.json');

describe('attribute cache', () => {
  it('applies pushes and answers, and survives a restart', () => {
    const path = file();
    const store = AttributeStore.open(path, log);
    store.applySharedUpdate('B', { changed: { setpoint: 21, mode: 'eco' }, deleted: [] });
    store.applySharedUpdate('B', { changed: { setpoint: 22 }, deleted: ['mode'] });
    store.mergeAnswer('B', 'shared', ['limit', 'gone'], { limit: 5 });
    store.mergeClient('B', { serial: 'SN-1' });
    store.close();
    const reopened = AttributeStore.open(path, log);
    expect(reopened.shared('B')).toEqual({ setpoint: 22, limit: 5 });
    expect(reopened.client('B')).toEqual({ serial: 'SN-1' });
    expect(reopened.shared('unknown')).toEqual({});
  });

  it('keeps a device\'s large integers to the digit, in memory and across a restart', () => {
    const path = file();
    const store = AttributeStore.open(path, log);
    store.mergeClient('B', { counter: new ExactInteger('9223372036854775806') });
    // The same double as the one before: only the digits tell them apart.
    store.mergeClient('B', { counter: new ExactInteger('9223372036854775807') });
    expect(store.client('B')).toEqual({ counter: new ExactInteger('9223372036854775807') });
    store.close();
    expect(AttributeStore.open(path, log).client('B')).toEqual({ counter: new ExactInteger('9223372036854775807') });
  });

  it('forgets a key an answer says no longer exists', () => {
    const store = AttributeStore.open(file(), log);
    store.applySharedUpdate('B', { changed: { a: 1, b: 2 }, deleted: [] });
    store.mergeAnswer('B', 'shared', ['a', 'b'], { a: 3 });
    expect(store.shared('B')).toEqual({ a: 3 });
    store.close();
  });

  it('sets a damaged file aside instead of failing or trusting it', () => {
    const path = file();
    writeFileSync(path, '{"version":1,"devices":');
    const store = AttributeStore.open(path, log);
    expect(store.shared('B')).toEqual({});
    expect(readdirSync(join(path, '..')).some((name) => name.startsWith('attributes.json.damaged-'))).toBe(true);
  });
});

describe('attribute cache writes', () => {
  it('does not rewrite the file when an answer repeats what is known', async () => {
    const { statSync } = await import('node:fs');
    const path = file();
    const store = AttributeStore.open(path, log);
    store.applySharedUpdate('B', { changed: { a: 1, nested: { x: [1] } }, deleted: [] });
    store.close();
    const written = statSync(path).mtimeMs;
    await new Promise((resolve) => setTimeout(resolve, 20));
    store.mergeAnswer('B', 'shared', ['a', 'nested'], { a: 1, nested: { x: [1] } });
    store.applySharedUpdate('B', { changed: { a: 1 }, deleted: ['missing'] });
    store.close();
    expect(statSync(path).mtimeMs).toBe(written);
    store.mergeAnswer('B', 'shared', ['a'], { a: 2 });
    store.close();
    expect(statSync(path).mtimeMs).toBeGreaterThan(written);
  });
});
