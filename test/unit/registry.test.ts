import { describe, expect, it } from 'vitest';
import type { DeviceEntry } from '../../src/config/load.js';
import { DeviceRegistry } from '../../src/devices/registry.js';

const entry = (name: string, extra: Partial<DeviceEntry> = {}): DeviceEntry => ({
  name,
  type: 'default',
  token: `${name}-token`,
  psk: undefined,
  cert: undefined,
  ...extra,
});

describe('DeviceRegistry.replace (a reload)', () => {
  it('reports what was added, removed and changed, and keeps the Device objects of unchanged devices', () => {
    const registry = new DeviceRegistry([
      entry('a'),
      entry('b', { psk: { identity: 'b', key: Buffer.from('key-b') } }),
      entry('c'),
      entry('d', { cert: { cn: 'd' } }),
    ]);
    const a = registry.findByToken('a-token');
    const change = registry.replace([
      entry('a'),
      entry('b', { psk: { identity: 'b', key: Buffer.from('new-key') } }),
      entry('d', { cert: { cn: 'd' }, type: 'valve' }),
      entry('e'),
    ]);
    expect(change).toEqual({ added: ['e'], removed: ['c'], changed: ['b', 'd'] });
    expect(registry.findByToken('a-token')).toBe(a);
    expect(registry.findByToken('c-token')).toBeUndefined();
    expect(registry.pskKey('b')).toEqual(Buffer.from('new-key'));
    expect(registry.findByCredential({ kind: 'certificate', fingerprint256: 'x', commonName: 'd', subject: '' })).toEqual({ name: 'd', type: 'valve' });
    expect(registry.size).toBe(4);
  });

  it('sees a token change as a change, and the old token as unknown', () => {
    const registry = new DeviceRegistry([entry('a')]);
    expect(registry.replace([entry('a', { token: 'rotated' })])).toEqual({ added: [], removed: [], changed: ['a'] });
    expect(registry.findByToken('a-token')).toBeUndefined();
    expect(registry.findByToken('rotated')?.name).toBe('a');
  });
});
