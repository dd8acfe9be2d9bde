// Paths of the configuration as the start uses them: state.dir, and the files read at start.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { checkStartPaths, createDirectories, directoryProblem, readableFileProblem } from '../../src/config/paths.js';
import { StartupError, startGateway } from '../../src/gateway.js';
import { createLogger } from '../../src/log.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'coap2mqtt-paths-'));

describe('directoryProblem (state.dir)', () => {
  it('accepts a writable directory, and one that can be created below it', () => {
    const base = dir();
    expect(directoryProblem(base)).toBeUndefined();
    expect(directoryProblem(join(base, 'a', 'b'))).toBeUndefined();
  });

  it.each([
    ['a file', '/etc/passwd', /^"\/etc\/passwd" is not a directory/],
    ['below a file', '/etc/passwd/state', /^"\/etc\/passwd\/state" cannot be created: \/etc\/passwd is a file, not a directory/],
    ['below /proc', '/proc/1/coap2mqtt', /^"\/proc\/1\/coap2mqtt" is on proc, a kernel pseudo file system/],
    ['/proc itself', '/proc/self', /^"\/proc\/self" is on proc/],
    ['below /sys', '/sys/kernel/coap2mqtt', /^"\/sys\/kernel\/coap2mqtt" is on sysfs/],
    ['a NUL character', 'state\0x', /^must not contain a NUL character/],
    ['a path too long', `/tmp/${'x'.repeat(5000)}`, /^"\/tmp\/x+…" \(5005 characters\) cannot be used: the path is too long/],
  ])('refuses %s', (_what, path, expected) => {
    expect(directoryProblem(path)).toMatch(expected);
  });

  it('shows where a relative path leads', () => {
    // As many ".." as the working directory is deep, so the path reaches /etc/passwd from any checkout.
    const up = process.cwd().split(sep).filter(Boolean).map(() => '..').join('/');
    const relative = `no-such-dir-at-all/../${up}/etc/passwd`;
    const problem = directoryProblem(relative);
    expect(problem).toBe(`"${relative}" (here /etc/passwd) is not a directory; the gateway keeps its files in a directory, e.g. "/var/lib/coap2mqtt"`);
  });
});

describe('createDirectories', () => {
  it('creates every missing directory', () => {
    const path = join(dir(), 'a', 'b', 'c');
    createDirectories(path);
    expect(statSync(path).isDirectory()).toBe(true);
    createDirectories(path);
  });

  it('fails at once under /proc, where mkdir with recursive: true never returns', () => {
    expect(() => createDirectories('/proc/1/coap2mqtt/state')).toThrow(/ENOENT/);
  });

  it('makes a start on a state.dir under /proc fail at once, not hang', async () => {
    const file = join(dir(), 'config.json');
    writeFileSync(file, JSON.stringify({ state: { dir: '/proc/1/coap2mqtt' }, http: { enabled: false } }));
    const loaded = loadConfig({ file, env: {} });
    if (!loaded.ok) throw new Error(loaded.errors.join('; '));
    const start = startGateway(loaded.config, createLogger('silent'));
    await expect(start).rejects.toThrow(StartupError);
    await expect(start).rejects.toThrow(/state\.dir "\/proc\/1\/coap2mqtt" cannot be created or is not writable/);
  });
});

describe('readableFileProblem (certificates, keys)', () => {
  it('refuses what would block or never end a read at start', () => {
    const fifo = join(dir(), 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(readableFileProblem(fifo)).toBe(`"${fifo}" is not a regular file`);
    expect(readableFileProblem('/dev/zero')).toBe('"/dev/zero" is not a regular file');
    expect(readableFileProblem('/proc/kmsg')).toBe('"/proc/kmsg" is on proc, a kernel pseudo file system, not a file on a disk');
    expect(readableFileProblem('/nope.pem')).toBe('cannot read file "/nope.pem": no such file or directory, stat \'/nope.pem\'');
    const pem = join(dir(), 'x.pem');
    writeFileSync(pem, '');
    expect(readableFileProblem(pem)).toBeUndefined();
  });
});

describe('checkStartPaths', () => {
  it('refuses state.dir and warns about a firmware.cacheDir that cannot work', () => {
    const file = join(dir(), 'config.json');
    writeFileSync(file, JSON.stringify({ state: { dir: '/etc/passwd' }, firmware: { cacheDir: '/proc/1/firmware' } }));
    const loaded = loadConfig({ file, env: {} });
    if (!loaded.ok) throw new Error(loaded.errors.join('; '));
    expect(checkStartPaths(loaded.config)).toEqual({
      errors: [expect.stringMatching(/^state\.dir: "\/etc\/passwd" is not a directory/)],
      warnings: [expect.stringMatching(/^firmware\.cacheDir: "\/proc\/1\/firmware" is on proc.*; package images are then kept in memory only$/)],
    });
  });
});
