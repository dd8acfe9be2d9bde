import { chmodSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backupFile, writeFileAtomic } from '../../src/config/atomic-file.js';

describe('writeFileAtomic', () => {
  it('replaces a file keeping its mode, creates a new one 0640, and leaves no temporary file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-atomic-'));
    const existing = join(dir, 'devices.json');
    writeFileSync(existing, 'old');
    chmodSync(existing, 0o600);
    writeFileAtomic(existing, 'new');
    expect(readFileSync(existing, 'utf8')).toBe('new');
    expect(statSync(existing).mode & 0o777).toBe(0o600);
    writeFileAtomic(join(dir, 'fresh.json'), '[]');
    expect(statSync(join(dir, 'fresh.json')).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir).sort()).toEqual(['devices.json', 'fresh.json']);
  });

  it('keeps backups side by side without overwriting an earlier one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-backup-'));
    const file = join(dir, 'config.json5');
    writeFileSync(file, 'one');
    const at = new Date('2026-11-22T10:00:00Z');
    const first = backupFile(file, at);
    writeFileSync(file, 'two');
    const second = backupFile(file, at);
    expect(first).toBe(`${file}.bak-20261122T100000Z`);
    expect(second).toBe(`${file}.bak-20261122T100000Z-2`);
    expect([readFileSync(first, 'utf8'), readFileSync(second, 'utf8')]).toEqual(['one', 'two']);
  });
});
