// `coap2mqtt doctor` as a technician runs it on the box: the built CLI against real brokers (mosquitto,
// with and without passwords and TLS), certificates made with openssl, and state directories that cannot be.
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseWriteBytes } from '../../src/ops/process-io.js';
import { coapClient } from '../helpers/coap-client.js';
import { CLI, GatewayProcess, killAllGatewayProcesses } from '../helpers/gateway-process.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { freeTcpPort, freeUdpPort } from '../helpers/ports.js';

const TOKEN = 'doctor-secret-token-123';
const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-doctor-'));
let broker: Mosquitto;
let guarded: Mosquitto;
let tlsBroker: Mosquitto;
/** Serves a self-signed certificate that names no address: right CA, wrong host. */
let misnamedBroker: Mosquitto;
let pki: TestPki;
let certs: { expired: Pair; soon: Pair; other: Pair };

interface Pair {
  readonly cert: string;
  readonly key: string;
}

/** A self-signed certificate valid for `days` (-1: it expired a day ago). */
function certificate(name: string, days: number): Pair {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  const csr = join(dir, `${name}.csr`);
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
  run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  run(['x509', '-req', '-in', csr, '-signkey', key, '-days', String(days), '-out', cert]);
  return { cert, key };
}

/** statfs's f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
const isoDate = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
const validTo = (file: string): number => Date.parse(new X509Certificate(readFileSync(file)).validTo);

beforeAll(async () => {
  pki = makeTestPki(join(dir, 'pki'));
  [broker, guarded, tlsBroker, misnamedBroker] = await Promise.all([
    Mosquitto.start(),
    Mosquitto.start(undefined, { users: { 'gateway-user': 'right-password' } }),
    Mosquitto.start(undefined, { tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } }),
    Mosquitto.start(undefined, { tls: { certFile: pki.pinned.certFile, keyFile: pki.pinned.keyFile } }),
  ]);
  certs = { expired: certificate('expired', -1), soon: certificate('soon', 10), other: certificate('other', 365) };
  // openssl's "-days -1" is what makes the expired one; make sure it did.
  expect(validTo(certs.expired.cert)).toBeLessThan(Date.now());
});

afterAll(async () => {
  await killAllGatewayProcesses();
  await Promise.all([broker?.dispose(), guarded?.dispose(), tlsBroker?.dispose(), misnamedBroker?.dispose()]);
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly lines: string[];
}

let runs = 0;

/** `coap2mqtt doctor --config FILE` with a config for a gateway on free ports, `sections` merged over it. */
async function doctor(sections: Record<string, Record<string, unknown>>, args: string[] = []): Promise<Result> {
  return runDoctor(await writeConfig(sections), args);
}

async function writeConfig(sections: Record<string, Record<string, unknown>>): Promise<string> {
  const runDir = join(dir, `run-${runs++}`);
  mkdirSync(runDir);
  const base: Record<string, Record<string, unknown>> = {
    coap: { host: '127.0.0.1', port: await freeUdpPort() },
    upstream: { url: broker.url, accessToken: TOKEN, connectTimeoutMs: 2000 },
    http: { host: '127.0.0.1', port: await freeTcpPort() },
    state: { dir: join(runDir, 'state') },
  };
  for (const [section, values] of Object.entries(sections)) base[section] = { ...base[section], ...values };
  const file = join(runDir, 'config.json');
  writeFileSync(file, JSON.stringify({ ...base, devices: [{ name: 'Boiler-7', type: 'thermostat', token: 'device-token-7' }] }));
  return file;
}

async function runDoctor(file: string, args: string[] = []): Promise<Result> {
  const child = spawn(process.execPath, [CLI, 'doctor', '--config', file, ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr, lines: stdout.split('\n').filter((line) => line !== '') };
}

const failLines = (result: Result): string[] => result.lines.filter((line) => line.startsWith('FAIL  '));
const line = (result: Result, check: string): string | undefined => result.lines.find((l) => new RegExp(`^(ok|warn|FAIL) +${check.replace('.', '\\.')}: `).test(l));

describe('coap2mqtt doctor', () => {
  it('passes against a running broker, one line per check and a summary, and exits 0', async () => {
    const result = await doctor({});
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(failLines(result)).toEqual([]);
    expect(line(result, 'upstream')).toMatch(
      new RegExp(`^ok {4}upstream: connected to mqtt://127\\.0\\.0\\.1:${broker.port} and logged in with upstream\\.accessToken as client "coap2mqtt-.*-doctor"`),
    );
    for (const check of ['configuration', 'clock', 'state.dir', 'disk', 'outbox', 'coap.port', 'http.port']) expect(line(result, check), check).toMatch(/^ok /);
    expect(result.lines.at(-1)).toMatch(/^(all \d+ checks ok|0 FAIL, \d+ warn, \d+ ok)/);
    // The gateway is not running: which disk, but no write rate.
    expect(line(result, 'storage')).toMatch(/^(ok {4}storage: .* is on .*: how much the gateway writes is unknown while it is not running \(run doctor again while it runs\)|warn {2}storage: .* is in memory)/);
    // Nothing was created: doctor only looks.
    expect(existsSync(join(dir, `run-${runs - 1}`, 'state'))).toBe(false);
    expect(result.stdout).not.toContain(TOKEN);
    expect(result.stderr).toBe('');
  });

  it('says in one FAIL line that a stopped broker refuses the connection, and exits 1', async () => {
    const port = await freeTcpPort();
    const result = await doctor({ upstream: { url: `mqtt://127.0.0.1:${port}` } });
    expect(result.code).toBe(1);
    expect(failLines(result)).toEqual([`FAIL  upstream: cannot reach mqtt://127.0.0.1:${port}: connection refused (is the broker running? is upstream.url right?)`]);
    expect(result.stdout).not.toMatch(/\n\s+at |Error:/);
    expect(result.stderr).toBe('');
    expect(result.lines.at(-1)).toMatch(/^1 FAIL/);
  });

  it('names the credentials a broker refuses, without showing them', async () => {
    const [wrongPassword, wrongToken, right] = await Promise.all([
      doctor({ upstream: { url: guarded.url, accessToken: '', username: 'gateway-user', password: 'wrong-password' } }),
      doctor({ upstream: { url: guarded.url } }),
      doctor({ upstream: { url: guarded.url, accessToken: '', username: 'gateway-user', password: 'right-password' } }),
    ]);
    expect(wrongPassword.code).toBe(1);
    expect(failLines(wrongPassword)).toHaveLength(1);
    expect(line(wrongPassword, 'upstream')).toMatch(
      /^FAIL {2}upstream: mqtt:\/\/127\.0\.0\.1:\d+ refused the login: (bad user name or password|not authorized): upstream\.username \/ upstream\.password do not match/,
    );
    expect(wrongPassword.stdout).not.toContain('wrong-password');
    expect(line(wrongToken, 'upstream')).toMatch(/refused the login: (bad user name or password|not authorized): upstream\.accessToken is wrong, or not the token of a gateway device/);
    expect(wrongToken.stdout).not.toContain(TOKEN);
    expect(right.code, right.stdout).toBe(0);
    expect(line(right, 'upstream')).toMatch(/^ok {4}upstream: connected .* logged in with upstream\.username \/ upstream\.password/);
  });

  it('explains a TLS broker whose certificate is not trusted, and passes with upstream.ca', async () => {
    const [untrusted, trusted] = await Promise.all([doctor({ upstream: { url: tlsBroker.url } }), doctor({ upstream: { url: tlsBroker.url, ca: pki.caFile } })]);
    expect(untrusted.code).toBe(1);
    expect(failLines(untrusted)).toEqual([
      `FAIL  upstream: cannot set up TLS with mqtts://127.0.0.1:${tlsBroker.port}: the broker's certificate (issued by "coap2mqtt test CA") is not trusted: set upstream.ca to the CA certificate (PEM) that signed it`,
    ]);
    expect(trusted.code, trusted.stdout).toBe(0);
    expect(line(trusted, 'upstream')).toMatch(/^ok {4}upstream: connected to mqtts:.*its TLS certificate \(CN=localhost\) is trusted and valid until \d{4}-\d\d-\d\d/);
    // The test CA lives 30 days: worth a warning, not a failure.
    expect(line(trusted, 'upstream.ca')).toMatch(/^warn {2}upstream\.ca: .*ca\.pem: the CA certificate CN=coap2mqtt test CA expires on \d{4}-\d\d-\d\d, in (29|30) days/);
  });

  it('names the host a broker certificate is not for', async () => {
    const result = await doctor({ upstream: { url: misnamedBroker.url, ca: pki.pinned.certFile } });
    expect(result.code).toBe(1);
    expect(failLines(result)).toEqual([
      `FAIL  upstream: cannot set up TLS with mqtts://127.0.0.1:${misnamedBroker.port}: the broker's certificate is not for "127.0.0.1" (it names CN=sensor-pinned-1): put one of those names in upstream.url`,
    ]);
  });

  it('checks beside a running gateway without taking its broker session, and says the ports are its', async () => {
    const file = await writeConfig({ upstream: { sessionLimitsTimeoutMs: 0, reconnectMinMs: 200 }, log: { level: 'info' } });
    const config = JSON.parse(readFileSync(file, 'utf8')) as { coap: { port: number }; http: { port: number } };
    const gateway = GatewayProcess.start(file, { env: { COAP2MQTT_HTTP_PORT: String(config.http.port) } });
    await gateway.waitForLog(/^upstream broker connected/);
    const result = await runDoctor(file);
    expect(result.code, result.stdout).toBe(0);
    expect(line(result, 'upstream')).toMatch(/^ok {4}upstream: connected .* as client "coap2mqtt-[^"]+-doctor"/);
    expect(line(result, 'coap.port')).toBe(`ok    coap.port: UDP 127.0.0.1:${config.coap.port} is in use by the running gateway (pid ${gateway.pid})`);
    expect(line(result, 'http.port')).toMatch(new RegExp(`^ok {4}http\\.port: TCP 127\\.0\\.0\\.1:${config.http.port} is served by the running gateway \\(pid ${gateway.pid}\\); /healthz answers 200`));
    expect(line(result, 'outbox')).toMatch(/^ok {4}outbox: .*outbox\.sqlite/);
    // The gateway kept its session: no reconnection, and its client id is not the one doctor used.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(gateway.logs().filter((entry) => /connection lost|reconnected/.test(String(entry.msg)))).toEqual([]);
    await gateway.kill('SIGTERM');
  });

  it('says what the running gateway writes to the state directory\'s disk, now and per day', async () => {
    // outbox.mode "always": each reading is committed to the outbox on disk before its 2.01.
    const file = await writeConfig({ upstream: { sessionLimitsTimeoutMs: 0, reconnectMinMs: 200 }, outbox: { mode: 'always' }, limits: { deviceRequestsPerSecond: 0 }, log: { level: 'info' } });
    const config = JSON.parse(readFileSync(file, 'utf8')) as { coap: { port: number }; http: { port: number }; state: { dir: string } };
    const gateway = GatewayProcess.start(file, { env: { COAP2MQTT_HTTP_PORT: String(config.http.port) } });
    await gateway.waitForLog(/^upstream broker connected/);
    const written = (): number => parseWriteBytes(readFileSync(`/proc/${gateway.pid}/io`, 'utf8'))!;
    // Readings all through doctor's sample of the write counter.
    let posting = true;
    let answered = 0;
    const device = (async () => {
      for (let n = 0; posting; n++) {
        const result = await coapClient(`coap://127.0.0.1:${config.coap.port}/api/v1/device-token-7/telemetry`, ['-m', 'post', '-e', `{"n":${n}}`]);
        if (result.response?.code === '2.01') answered++;
      }
    })();
    let before: number;
    let result: Result;
    let after: number;
    try {
      before = written();
      result = await runDoctor(file);
      after = written();
    } finally {
      posting = false;
      await device;
      await gateway.kill('SIGTERM');
    }
    expect(answered).toBeGreaterThan(5);

    const units: Record<string, number> = { bytes: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 };
    const size = '([\\d.]+) (bytes|KiB|MiB|GiB)';
    const storage = line(result, 'storage') ?? '';
    const match = new RegExp(
      `^(ok|warn) +storage: ${config.state.dir} is on \\S+.*: the running gateway \\(pid ${gateway.pid}\\) writes ${size}/s now, about ${size} a day \\(${size} since it started, under a minute ago\\)`,
    ).exec(storage);
    expect(match, result.stdout).not.toBeNull();
    const [rate, perDay, total] = [2, 4, 6].map((i) => Number(match![i]) * units[match![i + 1]!]!) as [number, number, number];
    // The total is the gateway's own counter, read between the test's two readings (give or take rounding to 0.1 of its unit).
    const rounding = 0.05 * units[match![7]!]!;
    expect(total).toBeGreaterThanOrEqual(before - rounding);
    expect(total).toBeLessThanOrEqual(after + rounding);
    // Per day is the rate times 86,400 s (each rounded to 0.1 of its unit for the words).
    expect(Math.abs(perDay - rate * 86_400)).toBeLessThanOrEqual(0.05 * units[match![5]!]! + 0.05 * units[match![3]!]! * 86_400);
    // tmpfs does not count writes (nothing reaches a disk); elsewhere stored readings do.
    if (statfsSync(config.state.dir).type !== TMPFS_MAGIC) expect(rate).toBeGreaterThan(0);
  });

  it('fails an expired DTLS certificate and warns about one expiring soon, naming the file and the date', async () => {
    const dtls = (pair: Pair): Record<string, unknown> => ({ enabled: true, port: 0, cert: pair.cert, key: pair.key });
    const [expired, soon] = await Promise.all([doctor({ dtls: dtls(certs.expired) }), doctor({ dtls: dtls(certs.soon) })]);
    expect(expired.code).toBe(1);
    expect(failLines(expired)).toEqual([
      `FAIL  dtls.cert: ${certs.expired.cert} (CN=expired) expired on ${isoDate(validTo(certs.expired.cert))}, 1 day ago: renew it, then sudo systemctl reload coap2mqtt`,
    ]);
    expect(soon.code, soon.stdout).toBe(0);
    expect(line(soon, 'dtls.cert')).toBe(
      `warn  dtls.cert: ${certs.soon.cert} (CN=soon) expires on ${isoDate(validTo(certs.soon.cert))}, in 10 days: renew it soon, then sudo systemctl reload coap2mqtt`,
    );
    expect(line(soon, 'dtls.key')).toMatch(/^(ok {4}dtls\.key: .* matching dtls\.cert|warn {2}dtls\.key: .*readable by every user)/);
    expect(line(soon, 'dtls.port')).toMatch(/^ok {4}dtls\.port: 0/);
  });

  it('fails a DTLS key that does not belong to the certificate', async () => {
    const result = await doctor({ dtls: { enabled: true, port: 0, cert: certs.other.cert, key: certs.soon.key } });
    expect(result.code).toBe(1);
    expect(failLines(result)).toEqual([
      `FAIL  dtls.key: ${certs.soon.key} does not belong to dtls.cert (${certs.other.cert}): the certificate was made for another key; use the key it was made with, or make a new certificate for this key`,
    ]);
  });

  it('fails a state directory that cannot be created', async () => {
    const file = join(dir, 'not-a-directory');
    writeFileSync(file, '');
    const result = await doctor({ state: { dir: join(file, 'state') } });
    expect(result.code).toBe(1);
    expect(failLines(result)).toEqual([`FAIL  state.dir: ${join(file, 'state')} cannot be created: ${file} is a file, not a directory; set state.dir to a directory path`]);
  });

  it('says the embedded broker port is free while the gateway is not running', async () => {
    const port = await freeTcpPort();
    const result = await doctor({ upstream: { url: '', accessToken: '' }, embeddedBroker: { port } });
    expect(result.code, result.stdout).toBe(0);
    expect(line(result, 'upstream')).toBe(
      `ok    upstream: no ThingsBoard configured (upstream.url is empty): readings go to the embedded broker on 127.0.0.1:${port}, which is free: the gateway is not running`,
    );
  });

  it('checks the HTTP device API port when it is enabled, naming the program that holds it', async () => {
    const free = await freeTcpPort();
    const ok = await doctor({ deviceHttp: { enabled: true, host: '127.0.0.1', port: free } });
    expect(line(ok, 'deviceHttp.port')).toBe(`ok    deviceHttp.port: TCP 127.0.0.1:${free} is free (the gateway is not running)`);
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const taken = (holder.address() as net.AddressInfo).port;
      const busy = await doctor({ deviceHttp: { enabled: true, host: '127.0.0.1', port: taken } });
      expect(line(busy, 'deviceHttp.port')).toMatch(new RegExp(`^warn  deviceHttp\\.port: TCP 127\\.0\\.0\\.1:${taken} is in use.*sudo ss -tlpn 'sport = :${taken}' names it`));
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('prints one JSON document with --json', async () => {
    const port = await freeTcpPort();
    const result = await doctor({ upstream: { url: `mqtt://127.0.0.1:${port}` } }, ['--json']);
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as { ok: boolean; failures: number; checks: Array<{ status: string; check: string; message: string }> };
    expect(report.ok).toBe(false);
    expect(report.failures).toBe(1);
    expect(report.checks.find((c) => c.check === 'upstream')).toEqual({
      status: 'fail',
      check: 'upstream',
      message: `cannot reach mqtt://127.0.0.1:${port}: connection refused (is the broker running? is upstream.url right?)`,
    });
  });
});
