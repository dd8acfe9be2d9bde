// An MQTT device against the gateway as a real process (node dist/cli.js): readings PUBACKed from the outbox
// survive a SIGKILL, a persistent session and the RPC queued for it survive a restart (both live in the
// session store: CONNACK says "session present" and the RPC follows without a new SUBSCRIBE), and a device
// removed or changed by a reload (SIGHUP) loses its connection.
// MQTT.js is the device, a real mosquitto behind a gate is ThingsBoard's broker. Needs `npm run build`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GatewayProcess, gatewayConfig, writeConfigFile, type Device } from '../helpers/gateway-process.js';
import { MqttJsDevice } from '../helpers/mqtt-js-device.js';
import { eventually, freeTcpPort, freeUdpPort, sleep } from '../helpers/ports.js';
import { GatedTcpProxy } from '../helpers/proxies.js';
import { upstreamRig } from '../helpers/upstream-rig.js';

const DEVICES: Device[] = [
  { name: 'Valve-1', type: 'valve', token: 'valve-token-1' },
  { name: 'Valve-2', type: 'valve', token: 'valve-token-2' },
  { name: 'Valve-3', type: 'valve', token: 'valve-token-3' },
];
/** Longer than the session store's commits take to come (50 ms after a quiet spell, 1 s apart): it is on disk. */
const WRITTEN_MS = 1300;
const RPC_REQUESTS = 'v1/devices/me/rpc/request/+';

const upstream = upstreamRig({ gatewayProcesses: true });

/** A gateway config on fixed ports and a state directory, so a restarted gateway is where devices left it. */
async function rig(extra: Record<string, Record<string, unknown>> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-mqtt-restart-'));
  upstream.cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const gate = await GatedTcpProxy.start(upstream.broker.port);
  upstream.cleanups.push(() => gate.close());
  const [coapPort, mqttPort] = [await freeUdpPort(), await freeTcpPort()];
  const write = (devices: readonly Device[]): string =>
    writeConfigFile(
      dir,
      gatewayConfig({
        port: coapPort,
        brokerUrl: gate.url,
        stateDir: join(dir, 'state'),
        devices,
        extra: { ...extra, mqttDevices: { enabled: true, host: '127.0.0.1', port: mqttPort, ...extra.mqttDevices } },
      }),
    );
  let configFile = write(DEVICES);
  return {
    gate,
    url: `mqtt://127.0.0.1:${mqttPort}`,
    reconfigure(devices: readonly Device[]) {
      configFile = write(devices);
    },
    async start(): Promise<GatewayProcess> {
      const gateway = GatewayProcess.start(configFile);
      await gateway.ready();
      return gateway;
    },
  };
}

async function device(url: string, token: string, options: { clientId?: string; clean?: boolean } = {}): Promise<MqttJsDevice> {
  const opened = await MqttJsDevice.connect(url, { username: token, clientId: options.clientId ?? token, clean: options.clean ?? true });
  upstream.cleanups.push(() => opened.close());
  return opened;
}

const ns = (name: string): Set<number> => new Set(upstream.tb.readings(name).map((reading) => (reading as { values: { n: number } }).values.n));

describe('SIGKILL after PUBACKs', () => {
  it.each([
    { mode: 'spill', brokerUp: false, what: 'broker away: every reading stored before its PUBACK' },
    { mode: 'always', brokerUp: true, what: 'outbox.mode always, the link to the broker slow: stored, PUBACKed, still on its way' },
  ])('every reading the device was PUBACKed reaches ThingsBoard after a restart ($what)', async ({ mode, brokerUp }) => {
    const setup = await rig({ outbox: { mode } });
    if (!brokerUp) setup.gate.shut();
    let gateway = await setup.start();
    if (brokerUp) {
      await gateway.waitForLog(/upstream broker connected/);
      // Publishes held on the way to the broker die with the connection: the kill finds them unsent.
      setup.gate.uplinkDelayMs = 5000;
    }
    const valve = await device(setup.url, 'valve-token-1');
    const readings = 200;
    // 16 in flight at a time, as a device with a small in-flight window sends a backlog.
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < readings) await valve.publish('v1/devices/me/telemetry', JSON.stringify({ n: next++ }));
    };
    await Promise.all(Array.from({ length: 16 }, lane));
    expect(valve.pubackIds()).toHaveLength(readings);
    // Killed the moment the last PUBACK is in: what the device was told is safe must be on disk.
    await gateway.kill('SIGKILL');
    const upstreamAtKill = ns('Valve-1').size;
    expect(upstreamAtKill).toBe(0);

    setup.gate.open();
    setup.gate.uplinkDelayMs = 0;
    gateway = await setup.start();
    await eventually(() => ns('Valve-1').size === readings, 15_000, `all ${readings} PUBACKed readings upstream (${ns('Valve-1').size} so far)`);
    console.log(`[mqtt-restart] SIGKILL (outbox.mode ${mode}): ${upstreamAtKill} of ${readings} readings upstream at the kill, the rest after the restart`);
    expect([...ns('Valve-1')].sort((a, b) => a - b)).toEqual(Array.from({ length: readings }, (_, n) => n));
    expect(gateway.running).toBe(true);
  });
});

describe('a persistent-session device and its queued RPC', () => {
  const rpc = (id: number): Promise<void> => upstream.tb.publish('v1/gateway/rpc', { device: 'Valve-2', data: { id, method: 'open', params: { valve: id } } });

  /** The device connects with clean session false, subscribes to RPCs, is known upstream, then goes away. */
  async function subscribeAndLeave(url: string): Promise<void> {
    const valve = await device(url, 'valve-token-2', { clientId: 'valve-2', clean: false });
    await valve.client.subscribeAsync(RPC_REQUESTS, { qos: 1 });
    await valve.publish('v1/devices/me/telemetry', '{"flow":2}');
    await upstream.tb.waitForReadings('Valve-2', 1);
    await valve.client.endAsync();
  }

  it('without a restart: CONNACK says session present and the RPC queued meanwhile follows without a new SUBSCRIBE', async () => {
    const setup = await rig();
    await setup.start();
    await subscribeAndLeave(setup.url);
    await rpc(40);
    await sleep(300);
    const back = await device(setup.url, 'valve-token-2', { clientId: 'valve-2', clean: false });
    expect(back.connack?.sessionPresent).toBe(true);
    const request = await eventually(() => back.publishesOn(/^v1\/devices\/me\/rpc\/request\/40$/).at(0), 5000, 'the queued RPC');
    expect(JSON.parse(request.payload.toString())).toEqual({ method: 'open', params: { valve: 40 } });
    expect(request.qos).toBe(1);
  });

  it('an RPC the device never PUBACKed goes back to the queue when its connection ends, and is delivered on the next one', async () => {
    const setup = await rig();
    await setup.start();
    const valve = await device(setup.url, 'valve-token-2', { clientId: 'valve-2', clean: false });
    // A device that takes the message and dies before acknowledging it: MQTT.js sends no PUBACK until this calls back.
    valve.client.handleMessage = () => {};
    await valve.client.subscribeAsync(RPC_REQUESTS, { qos: 1 });
    await valve.publish('v1/devices/me/telemetry', '{"flow":2}');
    await upstream.tb.waitForReadings('Valve-2', 1);
    await rpc(42);
    await eventually(() => valve.publishesOn(/rpc\/request\/42$/).at(0), 5000, 'the RPC on the first connection');
    valve.close();

    const back = await device(setup.url, 'valve-token-2', { clientId: 'valve-2', clean: false });
    expect(back.connack?.sessionPresent).toBe(true);
    const again = await eventually(() => back.publishesOn(/^v1\/devices\/me\/rpc\/request\/42$/).at(0), 5000, 'the unacknowledged RPC again');
    expect(JSON.parse(again.payload.toString())).toEqual({ method: 'open', params: { valve: 42 } });
  });

  it('across a SIGKILL: the session is present again and the RPC queued before the kill follows without a new SUBSCRIBE; its reply goes upstream', async () => {
    const setup = await rig();
    let gateway = await setup.start();
    await subscribeAndLeave(setup.url);
    await rpc(41);
    await sleep(WRITTEN_MS);
    await gateway.kill('SIGKILL');

    gateway = await setup.start();
    await gateway.waitForLog(/device sessions restored/);
    const back = await device(setup.url, 'valve-token-2', { clientId: 'valve-2', clean: false });
    // The session's subscriptions were written down with it (docs/sessions.md).
    expect(back.connack?.sessionPresent).toBe(true);
    const request = await eventually(() => back.publishesOn(/^v1\/devices\/me\/rpc\/request\/41$/).at(0), 5000, 'the RPC queued before the kill');
    expect(JSON.parse(request.payload.toString())).toEqual({ method: 'open', params: { valve: 41 } });
    await back.publish('v1/devices/me/rpc/response/41', '{"opened":true}');
    const reply = await eventually(() => upstream.tb.on('v1/gateway/rpc').find((m) => (m.json as { id?: number }).id === 41));
    expect(reply.json).toEqual({ device: 'Valve-2', id: 41, data: { opened: true } });
    // Delivered once: the PUBACK took it off the queue.
    await sleep(500);
    expect(back.publishesOn(/rpc\/request\/41$/)).toHaveLength(1);
  });
});

describe('a reload (SIGHUP)', () => {
  it('closes the MQTT connection of a device removed and of one whose token changed; the others stay connected', async () => {
    const setup = await rig();
    const gateway = await setup.start();
    const [removed, changed, kept] = [
      await device(setup.url, 'valve-token-1'),
      await device(setup.url, 'valve-token-2'),
      await device(setup.url, 'valve-token-3'),
    ];
    setup.reconfigure([
      { name: 'Valve-2', type: 'valve', token: 'valve-token-2b' },
      { name: 'Valve-3', type: 'valve', token: 'valve-token-3' },
    ]);
    gateway.child.kill('SIGHUP');
    await gateway.waitForLog(/configuration reloaded/);
    await eventually(() => !removed.open && !changed.open, 5000, 'the connections of the removed and the changed device closed');
    await sleep(300);
    expect(kept.open).toBe(true);
    await kept.publish('v1/devices/me/telemetry', '{"n":3}');
    await upstream.tb.waitForReadings('Valve-3', 1);
    // The old token no longer connects; the new one does.
    const stale = await MqttJsDevice.open(setup.url, { username: 'valve-token-1' });
    upstream.cleanups.push(() => stale.close());
    expect(stale.connack?.returnCode).toBe(5);
    const renewed = await device(setup.url, 'valve-token-2b');
    await renewed.publish('v1/devices/me/telemetry', '{"n":2}');
    await upstream.tb.waitForReadings('Valve-2', 1);
    expect(gateway.running).toBe(true);
  });
});
