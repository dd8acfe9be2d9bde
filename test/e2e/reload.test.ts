// The technician's tools against a running gateway process: `devices add/remove` edit the devices file and
// make the gateway reload it (SIGHUP), devices that did not change keep their observations, a broken file
// changes nothing, and `check-config --migrate` rewrites renamed keys keeping a backup.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import JSON5 from 'json5';
import { afterEach, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient } from '../helpers/coap-client.js';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { freeUdpPort } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Runs a technician command to completion. */
function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function siteWithGateway(): Promise<{ dir: string; config: string; port: number; tb: ThingsBoardDouble; gateway: GatewayProcess }> {
  const broker = await Mosquitto.start();
  cleanups.push(() => broker.dispose());
  const tb = await ThingsBoardDouble.connect(broker.url);
  cleanups.push(() => tb.close());
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-reload-'));
  const port = await freeUdpPort();
  const config = join(dir, 'config.json5');
  writeFileSync(
    config,
    `// a technician's file
{
  coap: { host: "127.0.0.1", port: ${port} },
  upstream: { url: "${broker.url}", accessToken: "gw-token", sessionLimitsTimeoutMs: 0 },
  devices: [ { name: "Boiler-7", type: "thermostat", token: "boiler-token" } ],  // kept here
  state: { dir: "${join(dir, 'state')}" },
}
`,
  );
  const gateway = GatewayProcess.start(config);
  cleanups.push(async () => void (await gateway.kill('SIGTERM')));
  await gateway.waitForLog(/upstream broker connected/);
  return { dir, config, port, tb, gateway };
}

describe('devices add / remove on a running gateway', () => {
  it('adds a device that can send at once, keeps the others observing, and removes one whose observation then ends', async () => {
    const { dir, config, port, tb, gateway } = await siteWithGateway();
    const observer = spawnCoapClient(`coap://127.0.0.1:${port}/api/v1/boiler-token/rpc`, ['-s', '30']);
    cleanups.push(() => void observer.stop());
    await observer.waitForResponses(1);

    const before = await coapClient(`coap://127.0.0.1:${port}/api/v1/pump-token/telemetry`, ['-m', 'post', '-e', '{"rpm":1}']);
    expect(before.response?.code).toBe('4.01');

    const added = await run(['devices', 'add', 'Pump-2', '--type', 'pump', '--token', 'pump-token', '--config', config]);
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    expect(added.stdout).toMatch(/added "Pump-2" \(type pump\)/);
    expect(added.stdout).toMatch(/the running gateway \(pid \d+\) reloaded:\n {2}devices: 1 added, 0 removed, 0 changed/);
    const file = join(dir, 'devices.json');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual([{ name: 'Pump-2', type: 'pump', token: 'pump-token' }]);
    expect(statSync(file).mode & 0o777).toBe(0o640);

    const after = await coapClient(`coap://127.0.0.1:${port}/api/v1/pump-token/telemetry`, ['-m', 'post', '-e', '{"rpm":1}']);
    expect(after.response?.code).toBe('2.01');
    await tb.waitForReadings('Pump-2', 1);

    // The unchanged device still observes: an RPC reaches it.
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 1, method: 'ping', params: {} } });
    const notified = await observer.waitForResponses(2);
    expect(notified[1]!.payload).toContain('"method":"ping"');

    // Removing Pump-2 (observing now) ends its observation with 4.01; Boiler-7 is untouched.
    const pumpObserver = spawnCoapClient(`coap://127.0.0.1:${port}/api/v1/pump-token/rpc`, ['-s', '30']);
    cleanups.push(() => void pumpObserver.stop());
    await pumpObserver.waitForResponses(1);
    const removed = await run(['devices', 'remove', 'Pump-2', '--config', config]);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toMatch(/devices: 0 added, 1 removed, 0 changed/);
    const ended = await pumpObserver.waitForResponses(2);
    expect(ended[1]!.code).toBe('4.01');
    const refused = await coapClient(`coap://127.0.0.1:${port}/api/v1/pump-token/telemetry`, ['-m', 'post', '-e', '{"rpm":2}']);
    expect(refused.response?.code).toBe('4.01');
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 2, method: 'ping', params: {} } });
    expect((await observer.waitForResponses(3))[2]!.payload).toContain('"id":2');

    expect(gateway.stdout()).not.toContain('pump-token');
  }, 30_000);

  it('refuses an edit that would make the list invalid, and a broken file on SIGHUP changes nothing', async () => {
    const { dir, config, port, gateway } = await siteWithGateway();
    const duplicate = await run(['devices', 'add', 'Boiler-7', '--config', config]);
    expect(duplicate.code).toBe(2);
    expect(duplicate.stderr).toMatch(/not changed.*\n.*"Boiler-7" is also the name of devices\[0\]/);
    expect(existsSync(join(dir, 'devices.json'))).toBe(false);

    const missing = await run(['devices', 'remove', 'Nobody', '--config', config]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no device named "Nobody"/);
    const inConfig = await run(['devices', 'remove', 'Boiler-7', '--config', config]);
    expect(inConfig.code).toBe(1);
    expect(inConfig.stderr).toMatch(/listed in the configuration file's devices/);

    // A technician's typo in the devices file, then systemctl reload: refused, the gateway keeps going.
    writeFileSync(join(dir, 'devices.json'), '[ { "name": "Pump-2", "token": } ]');
    process.kill(gateway.pid!, 'SIGHUP');
    await gateway.waitForLog(/^reload refused/);
    const line = gateway.logs().find((entry) => String(entry.msg).startsWith('reload refused'))!;
    expect(JSON.stringify(line.errors)).toMatch(/devices\.json is not valid JSON: line 1/);
    const stillServing = await coapClient(`coap://127.0.0.1:${port}/api/v1/boiler-token/telemetry`, ['-m', 'post', '-e', '{"t":1}']);
    expect(stillServing.response?.code).toBe('2.01');

    // A key that needs a restart is named, not applied.
    const text = readFileSync(config, 'utf8').replace('sessionLimitsTimeoutMs: 0', 'sessionLimitsTimeoutMs: 0, keepaliveSeconds: 30');
    writeFileSync(config, text);
    writeFileSync(join(dir, 'devices.json'), '[]');
    process.kill(gateway.pid!, 'SIGHUP');
    await gateway.waitForLog(/changed settings that need a restart/);
    expect(gateway.logs().find((entry) => entry.msg === 'changed settings that need a restart to take effect: not applied')!.keys).toEqual([
      'upstream.keepaliveSeconds',
    ]);
  }, 30_000);
});

describe('check-config', () => {
  it('exits 2 naming coap.port, its value and an example', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-check-'));
    writeFileSync(join(dir, 'config.json5'), '{ coap: { port: "abc" }, colour: "blue" }');
    const result = await run(['check-config', '--config', join(dir, 'config.json5')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('coap.port: must be a port number from 0 to 65535, e.g. 5683 (got "abc"; also settable with COAP2MQTT_COAP_PORT)');
    expect(result.stderr).toContain('warning: colour: unknown key, ignored');
  });

  it('--migrate renames old keys in place, keeping comments, the mode and a backup; the old name works meanwhile', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-migrate-'));
    const file = join(dir, 'config.json5');
    const original = `// plant 3
{
  coap: {
    port: 5683,
    maxPayloadBytes: 4096, // bodies up to 4 KiB
  },
}
`;
    writeFileSync(file, original);
    chmodSync(file, 0o640);
    const checked = await run(['check-config', '--config', file]);
    expect(checked.code).toBe(0);
    expect(checked.stdout).toMatch(/warning: coap\.maxPayloadBytes: renamed coap\.maxRequestBodyBytes in coap2mqtt 0\.2\.0 .* Run "coap2mqtt check-config --migrate/);

    const migrated = await run(['check-config', '--migrate', '--config', file]);
    expect(migrated.code).toBe(0);
    const backupName = readdirSync(dir).find((name) => name.startsWith('config.json5.bak-'))!;
    expect(migrated.stdout).toContain(`the previous file is kept as ${join(dir, backupName)}`);
    expect(migrated.stdout).not.toMatch(/warning/);
    expect(readFileSync(join(dir, backupName), 'utf8')).toBe(original);
    const text = readFileSync(file, 'utf8');
    expect(text).toBe(original.replace('maxPayloadBytes', 'maxRequestBodyBytes'));
    expect(JSON5.parse(text)).toEqual({ coap: { port: 5683, maxRequestBodyBytes: 4096 } });
    expect(statSync(file).mode & 0o777).toBe(0o640);

    const again = await run(['check-config', '--migrate', '--config', file]);
    expect(again.stdout).toContain(`nothing to migrate in ${file}`);
  });
});
