// The systemd side of an installation: the shipped unit passes `systemd-analyze verify` (and keeps its
// hardening score), the gateway speaks sd_notify over a real AF_UNIX datagram socket (READY, STATUS,
// watchdog, STOPPING), and install.sh / uninstall.sh / pack.sh work into a temporary root.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SystemdNotifier, type SdNotifyBinding } from '../../src/ops/systemd.js';
import { GatewayProcess, killAllGatewayProcesses } from '../helpers/gateway-process.js';
import { eventually, sleep } from '../helpers/ports.js';

const REPO = join(import.meta.dirname, '../..');
const UNIT = join(REPO, 'systemd/coap2mqtt.service');

function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}
const HAS_ANALYZE = onPath('systemd-analyze');
const HAS_SYSUSERS = onPath('systemd-sysusers');
const SKIP_ANALYZE = HAS_ANALYZE ? '' : ' [SKIPPED: systemd-analyze not found; apt-get install systemd]';

const temporaries: string[] = [];
const children: ChildProcess[] = [];
function tempDir(prefix: string): string {
  // Under /tmp, not a long TMPDIR: AF_UNIX socket paths must stay under 108 bytes.
  const dir = mkdtempSync(join(existsSync('/tmp') ? '/tmp' : tmpdir(), prefix));
  temporaries.push(dir);
  return dir;
}
afterEach(async () => {
  await killAllGatewayProcesses();
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});
afterAll(() => {
  for (const dir of temporaries.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs a command to completion; output and status for the assertion message. */
function run(command: string, args: readonly string[], env: Record<string, string> = {}): { status: number | null; output: string } {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: result.status, output: `$ ${command} ${args.join(' ')}\n${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? String(result.error) : ''}` };
}

/**
 * `systemd-analyze verify` on a unit file: exit status 0 and no complaint naming the file (unknown keys and
 * bad values are only warnings, exit status 0). Lines about other units on a real host are not ours to judge.
 */
function expectVerified(file: string): void {
  const result = run('systemd-analyze', ['verify', '--man=no', file]);
  const complaints = result.output
    .split('\n')
    .slice(1)
    .filter((line) => line.includes('coap2mqtt'));
  expect({ status: result.status, complaints }, result.output).toEqual({ status: 0, complaints: [] });
}

/** The shipped unit as install.sh writes it on this machine: ExecStart's /usr/bin/node replaced by the node here when it lives elsewhere. */
function unitForThisMachine(dir: string): string {
  const text = readFileSync(UNIT, 'utf8');
  const file = join(dir, 'coap2mqtt.service');
  writeFileSync(file, existsSync('/usr/bin/node') ? text : text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `));
  return file;
}

describe('the systemd unit', () => {
  it(`passes systemd-analyze verify${SKIP_ANALYZE}`, { skip: !HAS_ANALYZE }, () => {
    expectVerified(unitForThisMachine(tempDir('c2m-unit-')));
  });

  it(`keeps its systemd-analyze security exposure at 2.0 or below${SKIP_ANALYZE}`, { skip: !HAS_ANALYZE }, () => {
    // --threshold is in tenths: 20 = an overall exposure of 2.0 ("OK"); the unit scores 1.3 with systemd 252.
    const result = run('systemd-analyze', ['security', '--offline=yes', '--threshold=20', unitForThisMachine(tempDir('c2m-unit-'))]);
    expect(result.status, result.output).toBe(0);
  });

  it('says what a technician and the protocol need', () => {
    const unit = readFileSync(UNIT, 'utf8');
    const settings = new Map<string, string[]>();
    for (const line of unit.split('\n')) {
      const match = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (match) settings.set(match[1]!, [...(settings.get(match[1]!) ?? []), match[2]!]);
    }
    const one = (key: string): string | undefined => settings.get(key)?.at(-1);
    expect(one('Type')).toBe('notify');
    expect(one('NotifyAccess')).toBe('main');
    expect(one('ExecStart')).toBe('/usr/bin/node --max-semi-space-size=4 /opt/coap2mqtt/dist/cli.js --config /etc/coap2mqtt/config.json5');
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('User')).toBe('coap2mqtt');
    expect(one('RestrictAddressFamilies')!.split(' ')).toContain('AF_UNIX'); // sd_notify
    expect(one('MemoryDenyWriteExecute')).toBe('no'); // V8's JIT
    expect(one('RestartPreventExitStatus')).toBe('2');
    // The watchdog must outlast a shutdown's drain (5 s) plus outbox.shutdownFlushMs (5 s), and so must the stop timeout.
    expect(Number.parseInt(one('TimeoutStopSec')!, 10)).toBeGreaterThan(10);
    expect(Number.parseInt(one('WatchdogSec')!, 10)).toBeGreaterThanOrEqual(10);
  });
});

/** A python3 process bound to an AF_UNIX datagram socket, printing each datagram as a JSON string line. */
class NotifyReceiver {
  readonly datagrams: string[] = [];
  private constructor(readonly child: ChildProcess) {}

  static async start(socketPath: string): Promise<NotifyReceiver> {
    const script = [
      'import json, socket, sys',
      'p = sys.argv[1]',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      "s.bind('\\0' + p[1:] if p.startswith('@') else p)",
      "print('listening', flush=True)",
      'while True:',
      "    print(json.dumps(s.recv(65536).decode('utf-8', 'replace')), flush=True)",
    ].join('\n');
    const child = spawn('python3', ['-c', script, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const receiver = new NotifyReceiver(child);
    let pending = '';
    let listening = false;
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let failure: string | undefined;
    child.on('error', (error) => (failure = `cannot run python3: ${error.message}`));
    child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        if (line === 'listening') listening = true;
        else if (line !== '') receiver.datagrams.push(JSON.parse(line) as string);
      }
    });
    await eventually(
      () => {
        if (failure !== undefined || child.exitCode !== null) throw new Error(`the python3 receiver failed: ${failure ?? stderr}`);
        return listening;
      },
      10_000,
      'the python3 sd_notify receiver',
    );
    return receiver;
  }

  /** Each datagram's assignments, e.g. { READY: '1', STATUS: '...' }. */
  messages(): Array<Record<string, string>> {
    return this.datagrams.map((datagram) =>
      Object.fromEntries(datagram.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)])),
    );
  }

  describe(): string {
    return `datagrams received:\n${this.datagrams.map((d) => `  ${JSON.stringify(d)}`).join('\n')}`;
  }
}

/** A gateway on the embedded broker, everything on free ports, state in a temp dir. */
function embeddedConfig(dir: string, extra: Record<string, unknown> = {}): string {
  const file = join(dir, 'config.json');
  writeFileSync(
    file,
    JSON.stringify({
      coap: { host: '127.0.0.1', port: 0 },
      embeddedBroker: { host: '127.0.0.1', port: 0 },
      state: { dir: join(dir, 'state') },
      log: { level: 'info' },
      ...extra,
    }),
  );
  return file;
}

describe('sd_notify, end to end', () => {
  it('READY=1 with a STATUS once serving, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM, exit 0', async () => {
    const dir = tempDir('c2m-sd-');
    const socket = join(dir, 'notify.sock');
    const receiver = await NotifyReceiver.start(socket);
    const gateway = GatewayProcess.start(embeddedConfig(dir), { env: { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000' } });
    const context = (): string => `${receiver.describe()}\n${gateway.describe()}`;

    const ready = await eventually(() => receiver.messages().find((m) => m.READY === '1'), 15_000, `READY=1\n${context()}`);
    expect(ready.STATUS, context()).toMatch(/^serving CoAP on udp 127\.0\.0\.1:\d+; upstream (connected|connecting)/);
    const started = await gateway.ready();
    expect(ready.STATUS).toContain(`CoAP on ${String(started.coap)};`);
    // The embedded broker comes up with the gateway: STATUS follows the connection.
    await eventually(() => receiver.messages().some((m) => m.STATUS?.includes('upstream connected')), 10_000, `upstream connected\n${context()}`);

    const readyAt = receiver.datagrams.findIndex((d) => d.includes('READY=1'));
    await eventually(() => receiver.messages().slice(readyAt).filter((m) => m.WATCHDOG === '1').length >= 3, 5_000, `3 watchdog pings\n${context()}`);
    expect(receiver.messages().slice(0, readyAt).some((m) => m.WATCHDOG === '1'), 'no ping before READY').toBe(false);

    const exit = await gateway.kill('SIGTERM');
    expect(exit, context()).toEqual({ code: 0, signal: null });
    const stopping = receiver.messages().find((m) => m.STOPPING === '1');
    expect(stopping?.STATUS, context()).toMatch(/^stopping/);
    // Nothing may follow the stop that systemd could read as "ready again".
    const stoppingAt = receiver.messages().indexOf(stopping!);
    expect(receiver.messages().slice(stoppingAt).some((m) => m.READY === '1')).toBe(false);
  });

  it('SIGHUP reloads between RELOADING=1 (with MONOTONIC_USEC) and READY=1; the abstract namespace (@) works; WATCHDOG_PID for another process means no pings', async () => {
    const dir = tempDir('c2m-sd-');
    const socket = `@coap2mqtt-test-${process.pid}-${Date.now()}`;
    const receiver = await NotifyReceiver.start(socket);
    const gateway = GatewayProcess.start(embeddedConfig(dir), {
      env: { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '200000', WATCHDOG_PID: '1' },
    });
    const context = (): string => `${receiver.describe()}\n${gateway.describe()}`;
    await eventually(() => receiver.messages().some((m) => m.READY === '1'), 15_000, `READY=1\n${context()}`);

    const before = process.hrtime.bigint() / 1000n;
    gateway.child.kill('SIGHUP');
    const reloading = await eventually(() => receiver.messages().find((m) => m.RELOADING === '1'), 10_000, `RELOADING=1\n${context()}`);
    const monotonic = BigInt(reloading.MONOTONIC_USEC!);
    // The same clock (CLOCK_MONOTONIC) in both processes.
    expect(monotonic >= before && monotonic <= process.hrtime.bigint() / 1000n, `MONOTONIC_USEC ${monotonic} after ${before}`).toBe(true);
    const at = receiver.messages().indexOf(reloading);
    await eventually(() => receiver.messages().slice(at + 1).some((m) => m.READY === '1'), 10_000, `READY=1 after the reload\n${context()}`);

    await sleep(500);
    expect(receiver.messages().some((m) => m.WATCHDOG !== undefined), context()).toBe(false);
    expect(await gateway.kill('SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it('a start that fails tells systemd why: STATUS with the error (port taken: exit 1; invalid configuration: exit 2)', async () => {
    const dir = tempDir('c2m-sd-');
    const socket = join(dir, 'notify.sock');
    const receiver = await NotifyReceiver.start(socket);
    const taken = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => taken.bind(0, '127.0.0.1', resolve));
    try {
      const port = taken.address().port;
      const busy = GatewayProcess.start(embeddedConfig(dir, { coap: { host: '127.0.0.1', port } }), { env: { NOTIFY_SOCKET: socket } });
      expect((await busy.exited).code, busy.describe()).toBe(1);
      const failed = await eventually(() => receiver.messages().find((m) => m.STATUS?.startsWith('failed to start')), 5_000, receiver.describe());
      expect(failed.STATUS).toContain(String(port));
      expect(receiver.messages().some((m) => m.READY === '1')).toBe(false);
    } finally {
      taken.close();
    }

    const invalid = GatewayProcess.start(embeddedConfig(dir, { coap: { port: 'abc' } }), { env: { NOTIFY_SOCKET: socket } });
    expect((await invalid.exited).code, invalid.describe()).toBe(2);
    const status = await eventually(() => receiver.messages().find((m) => m.STATUS?.startsWith('invalid configuration')), 5_000, receiver.describe());
    expect(status.STATUS).toContain('coap.port');
    expect(status.STATUS).not.toContain('\n');
  });
});

describe('SystemdNotifier', () => {
  type NotifierLog = ConstructorParameters<typeof SystemdNotifier>[0];
  const quiet = (): { warn: string[]; info: string[]; log: NotifierLog } => {
    const warn: string[] = [];
    const info: string[] = [];
    const record = (into: string[]) => (object: unknown, message?: string) => void into.push(String(message ?? object));
    return { warn, info, log: { warn: record(warn), info: record(info), debug: () => undefined } as unknown as NotifierLog };
  };
  const recording = (): { sent: Array<[string, string]>; binding: SdNotifyBinding } => {
    const sent: Array<[string, string]> = [];
    return { sent, binding: { notify: (path, message) => void sent.push([path, message]) } };
  };

  it('does nothing, says nothing and loads nothing without NOTIFY_SOCKET', () => {
    const { log, warn } = quiet();
    const notifier = new SystemdNotifier(log, {
      env: { WATCHDOG_USEC: '1000' },
      binding: () => {
        throw new Error('must not be loaded');
      },
    });
    notifier.ready('x');
    notifier.startWatchdog({ status: () => 'y' });
    notifier.stopping();
    notifier.stop();
    expect(notifier.enabled).toBe(false);
    expect(notifier.watchdogIntervalMs).toBeUndefined();
    expect(warn).toEqual([]);
  });

  it('warns once and stays quiet when the binding cannot load', () => {
    const { log, warn } = quiet();
    const notifier = new SystemdNotifier(log, {
      env: { NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '1000' },
      binding: () => {
        throw new Error('no sd_notify.node');
      },
    });
    notifier.ready('x');
    notifier.startWatchdog();
    notifier.stop();
    expect(notifier.enabled).toBe(false);
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatch(/NOTIFY_SOCKET is set but the sd_notify binding cannot be loaded/);
  });

  it('keeps STATUS on one line, sends it only when it changed, and warns once while sending fails', () => {
    const { log, warn, info } = quiet();
    const { sent, binding } = recording();
    let failing = false;
    const notifier = new SystemdNotifier(log, {
      env: { NOTIFY_SOCKET: '/run/x' },
      binding: () => ({
        notify: (path, message) => {
          if (failing) throw new Error('sd_notify: cannot send to /run/x: Connection refused');
          binding.notify(path, message);
        },
      }),
    });
    notifier.ready('line one\nREADY=1\tline two');
    notifier.status('line one READY=1 line two');
    notifier.status('other');
    expect(sent).toEqual([
      ['/run/x', 'READY=1\nSTATUS=line one READY=1 line two'],
      ['/run/x', 'STATUS=other'],
    ]);
    failing = true;
    notifier.status('a');
    notifier.status('b');
    expect(warn).toHaveLength(1);
    failing = false;
    notifier.status('c');
    expect(info).toEqual(['notifying systemd works again']);
    expect(sent.at(-1)).toEqual(['/run/x', 'STATUS=c']);
  });

  it('pings at half of WATCHDOG_USEC only while healthy() holds, and only for WATCHDOG_PID', async () => {
    const { log } = quiet();
    const { sent, binding } = recording();
    let healthy = true;
    const notifier = new SystemdNotifier(log, { env: { NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '40000', WATCHDOG_PID: '4242' }, pid: 4242, binding: () => binding });
    expect(notifier.watchdogIntervalMs).toBe(20);
    notifier.startWatchdog({ healthy: () => healthy });
    await sleep(150);
    const pings = sent.filter(([, m]) => m === 'WATCHDOG=1').length;
    expect(pings).toBeGreaterThanOrEqual(3);
    healthy = false;
    await sleep(30);
    const whileUnhealthy = sent.length;
    await sleep(100);
    expect(sent.length).toBe(whileUnhealthy);
    notifier.stop();

    const other = new SystemdNotifier(log, { env: { NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '40000', WATCHDOG_PID: '1' }, pid: 4242, binding: () => binding });
    expect(other.watchdogIntervalMs).toBeUndefined();
  });
});

describe('install.sh, uninstall.sh and pack.sh', () => {
  it('pass bash -n', () => {
    for (const script of ['install.sh', 'uninstall.sh', 'pack.sh', 'lib.sh']) {
      const result = run('bash', ['-n', join(REPO, 'systemd', script)]);
      expect(result.status, result.output).toBe(0);
    }
  });

  it('the sysusers file creates the coap2mqtt user and group', { skip: !HAS_SYSUSERS }, () => {
    const root = tempDir('c2m-sysusers-');
    mkdirSync(join(root, 'etc'));
    const result = run('systemd-sysusers', [`--root=${root}`, join(REPO, 'systemd/coap2mqtt.sysusers')]);
    expect(result.status, result.output).toBe(0);
    expect(readFileSync(join(root, 'etc/passwd'), 'utf8')).toMatch(/^coap2mqtt:x:\d+:\d+:coap2mqtt gateway:\/var\/lib\/coap2mqtt:/m);
    expect(readFileSync(join(root, 'etc/group'), 'utf8')).toMatch(/^coap2mqtt:x:\d+:/m);
  });

  it(
    'install --root: program, wrapper, unit, config and state in place; check-config passes; a reinstall keeps the config; uninstall keeps config and state unless --purge',
    { timeout: 120_000 },
    () => {
      const root = tempDir('c2m-root-');
      const install = run('bash', [join(REPO, 'systemd/install.sh'), '--root', root]);
      expect(install.status, install.output).toBe(0);
      expect(install.output).toContain(`created ${root}/etc/coap2mqtt/config.json5 from the example`);
      // The installed command finds the installed configuration by itself (as `sudo coap2mqtt check-config` will).
      expect(install.output).toContain(`configuration OK (${root}/etc/coap2mqtt/config.json5)`);

      const program = join(root, 'opt/coap2mqtt');
      for (const file of ['dist/cli.js', 'build/Release/sd_notify.node', 'package.json', 'config/example.json5', 'systemd/uninstall.sh']) {
        expect(existsSync(join(program, file)), file).toBe(true);
      }
      const modules = readdirSync(join(program, 'node_modules'));
      expect(modules).toContain('better-sqlite3');
      expect(modules).toContain('mqtt');
      expect(modules, 'production dependencies only').not.toContain('vitest');
      expect(modules).not.toContain('typescript');
      expect(existsSync(join(program, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node'))).toBe(true);
      expect(existsSync(join(program + '.new'))).toBe(false);

      const mode = (path: string): string => (statSync(join(root, path)).mode & 0o777).toString(8);
      expect(mode('etc/coap2mqtt')).toBe('750');
      expect(mode('etc/coap2mqtt/config.json5')).toBe('640');
      expect(mode('etc/coap2mqtt/devices.json')).toBe('640');
      expect(mode('var/lib/coap2mqtt')).toBe('750');
      expect(mode('usr/local/bin/coap2mqtt')).toBe('755');
      expect(readFileSync(join(root, 'etc/coap2mqtt/config.json5'), 'utf8')).toBe(readFileSync(join(REPO, 'config/example.json5'), 'utf8'));
      expect(existsSync(join(root, 'usr/local/lib/sysusers.d/coap2mqtt.conf'))).toBe(true);
      const unit = join(root, 'usr/local/lib/systemd/system/coap2mqtt.service');
      expect(readFileSync(unit, 'utf8')).toMatch(/^ExecStart=\S*node --max-semi-space-size=4 \/opt\/coap2mqtt\/dist\/cli\.js --config \/etc\/coap2mqtt\/config\.json5$/m);
      if (HAS_ANALYZE) expectVerified(unit);

      const wrapper = join(root, 'usr/local/bin/coap2mqtt');
      const check = run(wrapper, ['check-config']);
      expect(check.status, check.output).toBe(0);
      expect(check.output).toContain(`configuration OK (${root}/etc/coap2mqtt/config.json5)`);
      expect(run(wrapper, ['--version']).output).toContain(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version);
      // --config wins over the installed default.
      const other = join(root, 'other.json');
      writeFileSync(other, JSON.stringify({ coap: { port: 'abc' } }));
      expect(run(wrapper, ['--config', other, 'check-config']).status).toBe(2);
      // Starting the gateway as root is refused (it would leave root-owned files in the state directory).
      if (process.getuid?.() === 0) {
        const asRoot = run(wrapper, ['--config', other]);
        expect(asRoot.status, asRoot.output).toBe(2);
        expect(asRoot.output).toContain('not starting the gateway as root');
      }

      // A technician's edits and the state survive an upgrade.
      const config = join(root, 'etc/coap2mqtt/config.json5');
      writeFileSync(config, `${readFileSync(config, 'utf8')}\n// edited on site\n`);
      chmodSync(config, 0o640);
      writeFileSync(join(root, 'var/lib/coap2mqtt/outbox.sqlite'), 'readings');
      const again = run('bash', [join(REPO, 'systemd/install.sh'), '--root', root]);
      expect(again.status, again.output).toBe(0);
      expect(again.output).toContain('upgraded');
      expect(again.output).toContain(`kept ${config}`);
      expect(readFileSync(config, 'utf8')).toContain('// edited on site');
      expect(readFileSync(join(root, 'var/lib/coap2mqtt/outbox.sqlite'), 'utf8')).toBe('readings');

      // An upgrade whose check-config fails leaves the installed program in place.
      const edited = readFileSync(config, 'utf8');
      writeFileSync(config, edited.replace('port: 5683,', 'port: "abc",'));
      const refused = run('bash', [join(REPO, 'systemd/install.sh'), '--root', root]);
      expect(refused.status, refused.output).toBe(1);
      expect(refused.output).toContain('coap.port: must be a port number');
      expect(refused.output).toContain('the installed version was left as it was');
      expect(existsSync(join(program, 'dist/cli.js'))).toBe(true);
      expect(existsSync(`${program}.new`)).toBe(false);
      writeFileSync(config, edited);

      const uninstall = run('bash', [join(program, 'systemd/uninstall.sh'), '--root', root]);
      expect(uninstall.status, uninstall.output).toBe(0);
      expect(uninstall.output).toContain('--purge');
      expect(existsSync(program)).toBe(false);
      expect(existsSync(wrapper)).toBe(false);
      expect(existsSync(unit)).toBe(false);
      expect(readFileSync(config, 'utf8')).toContain('// edited on site');
      expect(existsSync(join(root, 'var/lib/coap2mqtt/outbox.sqlite'))).toBe(true);

      const purge = run('bash', [join(REPO, 'systemd/uninstall.sh'), '--root', root, '--purge']);
      expect(purge.status, purge.output).toBe(0);
      expect(existsSync(join(root, 'etc/coap2mqtt'))).toBe(false);
      expect(existsSync(join(root, 'var/lib/coap2mqtt'))).toBe(false);
    },
  );

  it('pack.sh makes coap2mqtt-<version>-linux-<arch>-node<major>.tar.gz that installs offline', { timeout: 120_000 }, () => {
    const out = tempDir('c2m-pack-');
    // --reuse-node-modules packages this checkout's build as it is (the real release runs npm ci in a clean copy).
    const pack = run('bash', [join(REPO, 'systemd/pack.sh'), '--reuse-node-modules', '--out', out]);
    expect(pack.status, pack.output).toBe(0);
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    const name = `coap2mqtt-${version}-linux-${process.arch}-node${process.versions.node.split('.')[0]}.tar.gz`;
    expect(readdirSync(out)).toEqual([name]);

    const unpacked = tempDir('c2m-unpacked-');
    const untar = run('tar', ['-C', unpacked, '-xzf', join(out, name)]);
    expect(untar.status, untar.output).toBe(0);
    const release = join(unpacked, `coap2mqtt-${version}`);
    expect(readdirSync(release).sort()).toEqual(
      expect.arrayContaining(['.coap2mqtt-packed', 'build', 'config', 'dist', 'node_modules', 'package.json', 'systemd']),
    );
    expect(readdirSync(join(release, 'node_modules'))).not.toContain('vitest');

    const root = tempDir('c2m-root-');
    const install = run('bash', [join(release, 'systemd/install.sh'), '--root', root]);
    expect(install.status, install.output).toBe(0);
    expect(install.output).toContain(`configuration OK (${root}/etc/coap2mqtt/config.json5)`);
  });
});
