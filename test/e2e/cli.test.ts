// The built program as a technician runs it: exit codes, error messages, the embedded default, signals.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeTcpPort, freeUdpPort } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const CLI = join(import.meta.dirname, '../../dist/cli.js');

interface Run {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

const running: ChildProcess[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const child of running.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function cli(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [CLI, ...args], {
    // A free port for /healthz and /metrics: tests run in parallel.
    env: { PATH: process.env.PATH ?? '', COAP2MQTT_HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

function writeConfig(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-cli-')), 'config.json5');
  writeFileSync(file, text);
  return file;
}

describe('configuration errors', () => {
  it('names the key, the bad value and the expected form, and exits 2 before opening any socket', async () => {
    const port = await freeUdpPort();
    const file = writeConfig(`{
      coap: { port: ${port}, piggybackWindowMs: 5000 },
      upstream: { url: "http://thingsboard.example.com" },
      log: { level: "loud" },
      devices: [ { name: "Boiler-7", token: "a/b" }, { name: "Boiler-7", token: "ok-token" } ],
    }`);
    const run = cli(['--config', file]);
    expect(await run.exited).toBe(2);
    const stderr = run.stderr();
    expect(stderr).toContain(`invalid configuration in ${file}`);
    expect(stderr).toMatch(/coap\.piggybackWindowMs: must be a whole number from 0 to 1500, e\.g\. 500 \(got 5000; also settable with COAP2MQTT_COAP_PIGGYBACK_WINDOW_MS\)/);
    expect(stderr).toMatch(/upstream\.url: must be empty .* or an mqtt:\/\/ or mqtts:\/\/ URL.*got "http:\/\/thingsboard\.example\.com"/);
    expect(stderr).toMatch(/log\.level: must be one of.*"debug".*got "loud"/);
    expect(run.stdout()).not.toContain('started');
    // Nothing was bound: the configured CoAP port is still free.
    const probe = dgram.createSocket('udp6');
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(port, '::', () => probe.close(() => resolve()));
    });
  });

  it('reports device-list problems without echoing tokens', async () => {
    const file = writeConfig(`{ upstream: { url: "mqtt://127.0.0.1:1" }, devices: [
      { name: "Boiler-7", token: "has space" },
      { name: "Boiler-7", token: "secret-token-1" },
      { name: "Pump-2", token: "secret-token-1", tokn: "typo" },
    ] }`);
    const run = cli(['check-config', '--config', file]);
    expect(await run.exited).toBe(2);
    const stderr = run.stderr();
    expect(stderr).toMatch(/devices\[0\]\.token \("Boiler-7"\): must not contain spaces/);
    expect(stderr).toMatch(/devices\[1\]\.name: "Boiler-7" is also the name of devices\[0\]/);
    expect(stderr).not.toContain('secret-token-1');
    expect(stderr).not.toContain('has space');
  });

  it('points at the line and column of a JSON5 syntax error', async () => {
    const file = writeConfig('{\n  coap: { port: 5683 }\n  upstream: {}\n}');
    const run = cli(['check-config', '--config', file]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toMatch(/is not valid JSON5: line 3, column 3/);
  });

  it('says so when the file is missing', async () => {
    const run = cli(['--config', '/nonexistent/coap2mqtt.json5']);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toMatch(/cannot read config file \/nonexistent\/coap2mqtt\.json5: no such file/);
  });
});

describe('check-config', () => {
  it('accepts JSON5 with comments, warns about unknown keys, and takes COAP2MQTT_* over the file', async () => {
    const file = writeConfig(`// site: plant 3, line 2
      {
        coap: { prot: 5684 }, // typo on purpose
        upstream: { url: "mqtts://thingsboard.example.com:8883", accessToken: "tok" },
        devices: [ { name: "Boiler-7", type: "thermostat", token: "t1" } ],
      }`);
    const run = cli(['check-config'], { COAP2MQTT_CONFIG: file, COAP2MQTT_COAP_PORT: '15683' });
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toMatch(/warning: coap\.prot: unknown key, ignored \(did you mean coap\.port\?\)/);
    expect(run.stdout()).toMatch(/configuration OK .*port 15683, 1 device\(s\), upstream mqtts:\/\/thingsboard\.example\.com:8883/);
  });

  it('rejects a usage error with status 2', async () => {
    const run = cli(['frobnicate']);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toMatch(/unknown command "frobnicate"/);
  });
});

describe('running', () => {
  it('does the README scenario: one device, a real broker, a first reading, a clean SIGTERM', async () => {
    const broker = await Mosquitto.start();
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    // As ThingsBoard does: the gateway asks for its session limits before sending from its outbox.
    tb.answerSessionLimits();
    const port = await freeUdpPort();
    const file = writeConfig(`{
      coap: { port: ${port} },
      upstream: { url: "${broker.url}", accessToken: "gateway-access-token" },
      devices: [ { name: "Boiler-7", type: "thermostat", token: "A1_TEST_TOKEN" } ],
      state: { dir: "${join(tmpdir(), `coap2mqtt-state-${process.pid}-${Date.now()}`)}" },
    }`);
    const run = cli(['--config', file]);
    await eventually(() => run.stdout().includes('upstream broker connected'), 10_000, 'gateway start');

    const result = await coapClient(`coap://127.0.0.1:${port}/api/v1/A1_TEST_TOKEN/telemetry`, ['-m', 'post', '-e', '{"temperature":21.5}']);
    expect(result.response?.code).toBe('2.01');
    await tb.waitFor('v1/gateway/telemetry');
    expect(tb.received.map((m) => m.topic)).toEqual(['v1/devices/me/rpc/request/1', 'v1/devices/me/rpc/response/1', 'v1/gateway/connect', 'v1/gateway/telemetry']);
    expect(tb.received[0]!.json).toEqual({ method: 'getSessionLimits', params: {} });
    expect(run.stdout()).toContain('ThingsBoard session limits received');
    const gatewayApi = tb.received.filter((m) => m.topic.startsWith('v1/gateway/'));
    expect(gatewayApi[0]!.json).toEqual({ device: 'Boiler-7', type: 'thermostat' });
    expect(gatewayApi[1]!.text).toMatch(/^\{"Boiler-7":\[\{"ts":\d{13},"values":\{"temperature":21\.5\}\}\]\}$/);

    const unknown = await coapClient(`coap://127.0.0.1:${port}/api/v1/WRONG/telemetry`, ['-m', 'post', '-e', '{"temperature":21.5}']);
    expect(unknown.response?.code).toBe('4.01');
    const malformed = await coapClient(`coap://127.0.0.1:${port}/api/v1/A1_TEST_TOKEN/telemetry`, ['-m', 'post', '-e', '{"temperature":']);
    expect(malformed.response?.code).toBe('4.00');

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(run.stdout()).toContain('coap2mqtt stopped');
    for (const secret of ['A1_TEST_TOKEN', 'gateway-access-token']) expect(run.stdout()).not.toContain(secret);
  });

  it('runs on its embedded default with no broker installed: demo device, local broker, data stays local', async () => {
    const [coapPort, mqttPort] = [await freeUdpPort(), await freeTcpPort()];
    const run = cli([], {
      COAP2MQTT_COAP_PORT: String(coapPort),
      COAP2MQTT_EMBEDDED_BROKER_PORT: String(mqttPort),
      COAP2MQTT_STATE_DIR: mkdtempSync(join(tmpdir(), 'coap2mqtt-state-')),
    });
    await eventually(() => run.stdout().includes('upstream broker connected'), 10_000, 'gateway start');
    expect(run.stdout()).toMatch(/embedded MQTT broker started: data stays on this machine/);

    const watcher = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`);
    cleanups.push(() => watcher.endAsync(true));
    const seen: string[] = [];
    watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync('v1/gateway/#');

    const result = await coapClient(`coap://127.0.0.1:${coapPort}/api/v1/demo-token/telemetry`, ['-m', 'post', '-e', '{"temperature":21.5}']);
    expect(result.response?.code).toBe('2.01');
    await eventually(() => seen.find((line) => line.startsWith('v1/gateway/telemetry')), 5000, 'telemetry on the embedded broker');
    expect(seen.find((line) => line.startsWith('v1/gateway/telemetry'))).toMatch(/"demo-sensor":\[\{"ts":\d+,"values":\{"temperature":21\.5\}\}\]/);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
  });

  it('exits 1 with a plain explanation when the CoAP port is taken', async () => {
    const port = await freeUdpPort();
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => holder.bind(port, '0.0.0.0', resolve));
    cleanups.push(() => new Promise((resolve) => holder.close(() => resolve())));
    const run = cli([], {
      COAP2MQTT_COAP_HOST: '0.0.0.0',
      COAP2MQTT_COAP_PORT: String(port),
      COAP2MQTT_EMBEDDED_BROKER_PORT: String(await freeTcpPort()),
      COAP2MQTT_STATE_DIR: mkdtempSync(join(tmpdir(), 'coap2mqtt-state-')),
    });
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toMatch(new RegExp(`CoAP port ${port} on 0\\.0\\.0\\.0 is already in use`));
  });
});
