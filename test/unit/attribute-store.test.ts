import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
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

  it('keeps "__proto__" as an ordinary attribute key, in memory and across a restart', () => {
    const path = file();
    const store = AttributeStore.open(path, log);
    const attributes = JSON.parse('{"__proto__":{"polluted":1},"serial":"SN-2"}') as Record<string, never>;
    store.mergeClient('B', attributes);
    store.applySharedUpdate('B', { changed: JSON.parse('{"__proto__":5}') as Record<string, never>, deleted: [] });
    expect(Object.keys(store.client('B'))).toEqual(['__proto__', 'serial']);
    expect(store.shared('B')['__proto__']).toBe(5);
    store.close();
    const reopened = AttributeStore.open(path, log);
    expect(reopened.client('B')['__proto__']).toEqual({ polluted: 1 });
    expect(reopened.shared('B')['__proto__']).toBe(5);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('writes every other device when one entry cannot be encoded, and forgets that one', () => {
    const path = file();
    const lines: string[] = [];
    const store = AttributeStore.open(path, createLogger('error', { write: (line: string) => void lines.push(line) }));
    // Nothing unbounded should get here (downlink messages are bounded where they arrive); if it did,
    // JSON.stringify would overflow the stack on it.
    let deep: unknown = 1;
    for (let i = 0; i < 20_000; i++) deep = [deep];
    store.applySharedUpdate('Deep', { changed: { deep: deep as never }, deleted: [] });
    store.applySharedUpdate('Fine', { changed: { mode: 'eco' }, deleted: [] });
    store.close();
    const written = JSON.parse(readFileSync(path, 'utf8')) as { devices: Record<string, unknown> };
    expect(written.devices).toEqual({ Fine: { shared: { mode: 'eco' }, client: {} } });
    expect(lines.join('')).toMatch(/"device":"Deep".*could not be encoded/);
  });
});
