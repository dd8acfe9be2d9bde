// The MQTT device listener's ports as a technician meets them (docs/device-api-mqtt.md, "Trying it with
// the embedded broker"): the embedded broker's port or a loopback upstream's port is refused before
// anything is bound, by a start and by `coap2mqtt check-config`, naming the keys to change; a port another
// program holds stops the start with exit 1 and a sentence that says so, as for the other listeners.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killLeftoverCliRuns, runCli } from '../helpers/cli-process.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { freeTcpPort, freeUdpPort } from '../helpers/ports.js';

const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-mqtt-ports-'));
let pki: TestPki;
const holders: net.Server[] = [];

beforeAll(() => {
  pki = makeTestPki(join(dir, 'pki'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

afterEach(async () => {
  killLeftoverCliRuns();
  await Promise.all(holders.splice(0).map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
});

function writeConfig(name: string, config: Record<string, unknown>): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** A TCP port held by another program, on 127.0.0.1. */
async function heldPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  holders.push(server);
  return (server.address() as net.AddressInfo).port;
}

/** The environment of a gateway that would otherwise start: free ports, its own state directory. */
async function startableEnv(): Promise<Record<string, string>> {
  return {
    COAP2MQTT_COAP_HOST: '127.0.0.1',
    COAP2MQTT_COAP_PORT: String(await freeUdpPort()),
    COAP2MQTT_HTTP_PORT: '0',
    COAP2MQTT_STATE_DIR: mkdtempSync(join(dir, 'state-')),
    COAP2MQTT_MQTT_DEVICES_ENABLED: 'true',
    COAP2MQTT_MQTT_DEVICES_HOST: '127.0.0.1',
  };
}

describe('ports refused by the configuration', () => {
  it('mqttDevices.port equal to embeddedBroker.port (upstream.url empty): check-config and a start both refuse, naming both keys, before binding', async () => {
    const port = await freeTcpPort();
    const env = { ...(await startableEnv()), COAP2MQTT_MQTT_DEVICES_PORT: String(port), COAP2MQTT_EMBEDDED_BROKER_PORT: String(port) };
    const checked = await runCli(['check-config'], { env });
    expect(checked.code).toBe(2);
    expect(checked.stderr).toMatch(new RegExp(`mqttDevices\\.port: ${port} is also the embedded broker's port \\(embeddedBroker\\.port\\)`));
    const started = await runCli([], { env });
    expect(started.code).toBe(2);
    expect(started.stderr).toMatch(/mqttDevices\.port: .*embeddedBroker\.port/);
    expect(started.stdout).not.toContain('coap2mqtt started');
    // Nothing was bound: the port is still free.
    const probe = net.createServer();
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(port, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  });

  it('the defaults with the listener turned on (both on 1883): refused, with the way out', async () => {
    const checked = await runCli(['check-config'], { env: { COAP2MQTT_MQTT_DEVICES_ENABLED: 'true' } });
    expect(checked.code).toBe(2);
    expect(checked.stderr).toMatch(/mqttDevices\.port: 1883 .*embeddedBroker\.port.*COAP2MQTT_EMBEDDED_BROKER_PORT=1884/);
  });

  it('mqttDevices.port equal to the port of an upstream.url on this machine: refused by check-config', async () => {
    const port = await freeTcpPort();
    const file = writeConfig('loopback-upstream', {
      upstream: { url: `mqtt://localhost:${port}`, accessToken: 'gw' },
      mqttDevices: { enabled: true, port },
      devices: [{ name: 'Boiler-7', token: 'boiler-token-7' }],
    });
    const checked = await runCli(['check-config', '--config', file]);
    expect(checked.code).toBe(2);
    expect(checked.stderr).toMatch(new RegExp(`mqttDevices\\.port: ${port} is the port of upstream\\.url on this machine \\(localhost\\)`));
  });
});

describe('a port another program holds', () => {
  it('plain MQTT: exit 1, saying the port is in use and which key moves it', async () => {
    const port = await heldPort();
    const env = { ...(await startableEnv()), COAP2MQTT_MQTT_DEVICES_PORT: String(port), COAP2MQTT_EMBEDDED_BROKER_PORT: String(await freeTcpPort()) };
    const run = await runCli([], { env });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^coap2mqtt: the MQTT device port ${port} on 127\\.0\\.0\\.1 is already in use \\(mosquitto or another MQTT broker\\?.*\\); stop it or change mqttDevices\\.port$`, 'm'));
  });

  it('MQTT over TLS: exit 1, naming mqttDevices.tlsPort', async () => {
    const port = await heldPort();
    const env = {
      ...(await startableEnv()),
      COAP2MQTT_MQTT_DEVICES_PORT: '0',
      COAP2MQTT_MQTT_DEVICES_TLS: 'true',
      COAP2MQTT_MQTT_DEVICES_TLS_PORT: String(port),
      COAP2MQTT_MQTT_DEVICES_CERT: pki.server.certFile,
      COAP2MQTT_MQTT_DEVICES_KEY: pki.server.keyFile,
      COAP2MQTT_EMBEDDED_BROKER_PORT: String(await freeTcpPort()),
    };
    const run = await runCli([], { env });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`the MQTT device port ${port} on 127\\.0\\.0\\.1 is already in use .*change mqttDevices\\.tlsPort`));
  });
});
