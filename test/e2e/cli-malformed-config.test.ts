// Malformed configurations through the real CLI, `check-config` and a start: each is refused with exit 2
// (which the systemd unit does not restart), one error line naming the key, no stack trace, and at once:
// nothing may hang the start.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killLeftoverCliRuns, runCli, type CliOutcome } from '../helpers/cli-process.js';
import { schemaKeys, WRONG_VALUES, withValueAt, wrongKindsFor } from '../helpers/config-sweep.js';
import { GatewayProcess, killAllGatewayProcesses } from '../helpers/gateway-process.js';

afterEach(async () => {
  killLeftoverCliRuns();
  await killAllGatewayProcesses();
});

/** A directory every user may read, so a run as another user can read the config in it. */
function openDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-malformed-cli-'));
  chmodSync(dir, 0o755);
  return dir;
}

/** Free ports everywhere: if a broken config were accepted, the start would still not clash with anything. */
function baseConfig(): Record<string, unknown> {
  return {
    coap: { host: '127.0.0.1', port: 0 },
    dtls: { port: 0 },
    embeddedBroker: { port: 0 },
    http: { port: 0 },
    deviceHttp: { port: 0 },
    state: { dir: join(openDir(), 'state') },
  };
}

function writeConfig(content: unknown): string {
  const file = join(openDir(), 'config.json5');
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content), { mode: 0o644 });
  return file;
}

const COMMANDS = { 'check-config': ['check-config'], start: [] } as const;
type Command = keyof typeof COMMANDS;

function run(command: Command, file: string, options: { uid?: number } = {}): Promise<CliOutcome> {
  return runCli([...COMMANDS[command], '--config', file], options);
}

/** Refused as invalid: status 2, exactly one error line, about `key`, and nothing like a crash. */
function expectRefusal(outcome: CliOutcome, key: string, expected?: RegExp): void {
  const errorLines = outcome.stderr.split('\n').filter((line) => line.startsWith('  - '));
  expect({ code: outcome.code, errorLines }).toEqual({ code: 2, errorLines: [expect.stringMatching(new RegExp(`^  - ${escape(key)}`))] });
  if (expected) expect(errorLines[0]).toMatch(expected);
  expect(outcome.stderr).not.toMatch(/unexpected failure|Error:|^\s+at /m);
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const NESTED = { a: { b: { c: 1 } } };

function fifo(): string {
  const path = join(openDir(), 'fifo');
  execFileSync('mkfifo', [path]);
  return path;
}

const pem = (): string => {
  const path = join(openDir(), 'x.pem');
  writeFileSync(path, 'not read by check-config');
  return path;
};

interface Trigger {
  readonly what: string;
  readonly key: string;
  readonly file: () => string;
  readonly expected?: RegExp;
}

const TRIGGERS: readonly Trigger[] = [
  { what: 'a nested object as devices', key: 'devices: must be a JSON array', file: () => writeConfig({ ...baseConfig(), devices: NESTED }) },
  { what: 'a nested object as firmware.sources', key: 'firmware.sources: must be a list', file: () => writeConfig({ ...baseConfig(), firmware: { sources: NESTED } }) },
  { what: 'a nested object as provision.keys', key: 'provision.keys: must be a JSON array', file: () => writeConfig({ ...baseConfig(), provision: { keys: NESTED } }) },
  { what: 'a nested object as thethings.things', key: 'thethings.things: must be a JSON array', file: () => writeConfig({ ...baseConfig(), thethings: { things: NESTED } }) },
  { what: 'a nested object as state.dir', key: 'state.dir: must be a non-empty string', file: () => writeConfig(withValueAt(baseConfig(), 'state.dir', NESTED)) },
  { what: 'an object as devices', key: 'devices: must be a JSON array', file: () => writeConfig({ ...baseConfig(), devices: { a: 1 } }) },
  {
    what: 'a config nested 20,000 deep',
    key: 'a.a.a',
    expected: /nested more than \d+ levels deep/,
    file: () => writeConfig(`${'{"a":'.repeat(20_000)}1${'}'.repeat(20_000)}`),
  },
  { what: 'a file as state.dir', key: 'state.dir: "/etc/passwd" is not a directory', file: () => writeConfig(withValueAt(baseConfig(), 'state.dir', '/etc/passwd')) },
  {
    what: 'state.dir below a file',
    key: 'state.dir: "/etc/passwd/state" cannot be created: /etc/passwd is a file',
    file: () => writeConfig(withValueAt(baseConfig(), 'state.dir', '/etc/passwd/state')),
  },
  {
    what: 'state.dir under /proc (the start used to hang)',
    key: 'state.dir: "/proc/1/coap2mqtt" is on proc',
    expected: /a kernel pseudo file system/,
    file: () => writeConfig(withValueAt(baseConfig(), 'state.dir', '/proc/1/coap2mqtt')),
  },
  { what: 'a FIFO as the devices file (reading it used to hang)', key: 'devicesFile: ', expected: /is not a regular file/, file: () => writeConfig({ ...baseConfig(), devicesFile: fifo() }) },
  {
    what: '/proc/kmsg as the devices file (a "regular file" whose read blocks)',
    key: 'devicesFile: /proc/kmsg is on proc, a kernel pseudo file system',
    file: () => writeConfig({ ...baseConfig(), devicesFile: '/proc/kmsg' }),
  },
  {
    what: 'a FIFO as dtls.cert (reading it used to hang the start)',
    key: 'dtls.cert: ',
    expected: /is not a regular file/,
    file: () => writeConfig({ ...baseConfig(), dtls: { enabled: true, port: 0, cert: fifo(), key: pem() } }),
  },
];

describe.each(Object.keys(COMMANDS) as Command[])('%s refuses, with exit 2 and one line naming the key', (command) => {
  it.each(TRIGGERS)('$what', async ({ key, file, expected }) => {
    expectRefusal(await run(command, file()), key, expected);
  });

  it('a FIFO as the config file (reading it used to hang)', async () => {
    const outcome = await run(command, fifo());
    expect(outcome.code).toBe(2);
    expect(outcome.stderr).toMatch(/cannot read config file .*fifo: it is not a regular file/);
  });

  it('a state.dir the gateway\'s user cannot write', async () => {
    const readOnly = join(openDir(), 'read-only');
    mkdirSync(readOnly, { mode: 0o555 });
    chmodSync(readOnly, 0o555);
    // As root, permissions do not bind: the CLI runs as nobody then.
    const asOther = process.getuid?.() === 0 ? { uid: 65534 } : {};
    const user = process.getuid?.() === 0 ? 'nobody' : undefined;
    const existing = await run(command, writeConfig(withValueAt(baseConfig(), 'state.dir', readOnly)), asOther);
    expectRefusal(existing, `state.dir: "${readOnly}" is not writable${user ? ` by user ${user}` : ''}`);
    const below = await run(command, writeConfig(withValueAt(baseConfig(), 'state.dir', join(readOnly, 'state'))), asOther);
    expectRefusal(below, `state.dir: "${join(readOnly, 'state')}" cannot be created: ${readOnly} is not writable`);
  });
});

describe('a flood of errors', () => {
  it('prints 50 of 100,000 broken devices, then how many more, all of it (a pipe used to cut it off)', async () => {
    const outcome = await run('check-config', writeConfig({ ...baseConfig(), devices: Array.from({ length: 100_000 }, () => 1) }));
    const errorLines = outcome.stderr.split('\n').filter((line) => line.startsWith('  - '));
    expect(outcome.code).toBe(2);
    expect(errorLines).toHaveLength(51);
    expect(errorLines[49]).toMatch(/^  - devices\[49\]: must be an object/);
    expect(errorLines[50]).toBe('  - … and 99950 more errors');
  });
});

describe('a running gateway, reloaded (SIGHUP) with a malformed configuration', () => {
  it('keeps running on the previous one and names the key (the TypeError used to end it)', async () => {
    const file = writeConfig(baseConfig());
    const gateway = GatewayProcess.start(file);
    await gateway.waitForLog(/upstream broker connected/);
    writeFileSync(file, JSON.stringify({ ...baseConfig(), devices: NESTED }));
    process.kill(gateway.pid!, 'SIGHUP');
    await gateway.waitForLog(/^reload refused/);
    const refusal = gateway.logs().find((entry) => String(entry.msg).startsWith('reload refused'))!;
    expect(refusal.errors).toEqual([expect.stringMatching(/^devices: must be a JSON array/)]);
    expect(gateway.running).toBe(true);
    expect((await gateway.kill('SIGTERM')).code).toBe(0);
  });
});

describe('a start with DTLS material that OpenSSL refuses', () => {
  // check-config does not ask OpenSSL; the start does, and what it refuses is no reason to restart.
  const pskDevice = { name: 'A', psk: { identity: 'a', key: 'sixteen-byte-key' } };
  it.each([
    { key: 'dtls.ciphers', dtls: () => ({ ciphers: 'no-such-cipher' }), expected: /^coap2mqtt: dtls\.ciphers no-such-cipher: no cipher match/m },
    { key: 'dtls.cert', dtls: () => ({ cert: pem(), key: pem() }), expected: /^coap2mqtt: dtls\.cert ".*x\.pem": /m },
  ])('$key: exit 2, which the unit does not restart', async ({ dtls, expected }) => {
    const outcome = await run('start', writeConfig({ ...baseConfig(), dtls: { enabled: true, port: 0, ...dtls() }, devices: [pskDevice] }));
    expect(outcome.code).toBe(2);
    expect(outcome.stderr).toMatch(expected);
    expect(outcome.stderr).not.toMatch(/unexpected failure|^\s+at /m);
  });
});

describe('the sweep through the CLI: a wrong-typed value in every key, one at a time', () => {
  // Every (key, wrong value) pair runs through the loader in test/unit/config-malformed.test.ts; here each
  // key gets one of its wrong values (rotating through the kinds) and one of the two commands, alternately,
  // which keeps ~130 process starts to about a minute on two cores.
  const cases = schemaKeys().map(({ key, kind }, index) => {
    const kinds = wrongKindsFor(kind);
    const wrong = kinds[index % kinds.length]!;
    return { key, wrong, value: WRONG_VALUES[wrong], command: (index % 2 === 0 ? 'check-config' : 'start') as Command };
  });

  it('refuses each with exit 2, one error line naming the key, and no stack trace', { timeout: 240_000 }, async () => {
    const failures: string[] = [];
    const queue = [...cases];
    const worker = async (): Promise<void> => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const { key, wrong, value, command } = next;
        const outcome = await run(command, writeConfig(withValueAt(baseConfig(), key, value)));
        try {
          expectRefusal(outcome, `${key}: `);
        } catch {
          failures.push(`${command} with ${key} = ${wrong}: exit ${outcome.code}, ${outcome.stderr.split('\n').slice(0, 3).join(' | ')}`);
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    expect(failures).toEqual([]);
    expect(cases.length).toBeGreaterThan(100);
  });
});
