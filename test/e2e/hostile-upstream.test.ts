// What ThingsBoard relays from dashboards and rule chains is not to be trusted: deeply nested JSON, huge
// messages, ids out of range, device names the gateway does not know. Each must be refused where it
// arrives, logged once, answered upstream where the Gateway API allows, and never reach a device, a cache
// or a file. The gateway runs as a real process (a crash is an exit), with a real mosquitto, a ThingsBoard
// double, bare UDP sockets as CoAP devices and fetch on the HTTP device API.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as coapPacket from 'coap-packet';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayProcess, gatewayConfig, killAllGatewayProcesses, writeConfigFile } from '../helpers/gateway-process.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, eventuallyAsync, freeTcpPort, freeUdpPort, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, emptyReply, get } from '../helpers/udp-device.js';

const DEVICES = [
  { name: 'Boiler-7', type: 'thermostat', token: 'boiler-token-7' },
  { name: 'Pump-2', type: 'pump', token: 'pump-token-2' },
  { name: 'Valve-3', type: 'valve', token: 'valve-token-3' },
];

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gateway: GatewayProcess;
let coapPort: number;
let httpBase: string;
let metricsBase: string;
const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-hostile-upstream-'));
const stateDir = join(dir, 'state');

/** `depth` arrays inside one another: as JSON text, since JSON.stringify itself overflows on such values. */
const nested = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;

const publishRaw = (topic: string, text: string): Promise<void> => tb.publish(topic, text);

async function metric(line: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`${metricsBase}/metrics`)).text();
  return text.split('\n').find((each) => line.test(each));
}

/** A device observing `path` from a bare UDP socket, acknowledging every CON notification. */
async function observer(path: string): Promise<{
  registered: coapPacket.ParsedPacket;
  notifications: () => Promise<coapPacket.ParsedPacket | undefined>;
  close: () => Promise<void>;
}> {
  const device = await UdpDevice.open(coapPort);
  device.send(get(path, { observe: 0, token: Buffer.from('ob') }));
  const registered = await device.nextPacket();
  expect(registered?.code).toMatch(/^2\.0[35]$/);
  return {
    registered: registered!,
    // The last ACK must leave before the socket closes, or the gateway keeps that notification for later.
    async close() {
      await sleep(50);
      device.close();
    },
    async notifications() {
      const packet = await device.nextPacket(1000);
      if (packet?.confirmable) device.send(emptyReply('ack', packet.messageId));
      return packet;
    },
  };
}

/** The replies the gateway published for `device` on v1/gateway/rpc (the double hears requests there too). */
const rpcReplies = (device: string): unknown[] =>
  tb
    .on('v1/gateway/rpc')
    .map((message) => message.json as Record<string, unknown>)
    .filter((body) => body && body['device'] === device && Object.hasOwn(body, 'id'));

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  coapPort = await freeUdpPort();
  const httpPort = await freeTcpPort();
  const opsPort = await freeTcpPort();
  const config = gatewayConfig({
    port: coapPort,
    brokerUrl: broker.url,
    stateDir,
    devices: DEVICES,
    extra: {
      deviceHttp: { enabled: true, host: '127.0.0.1', port: httpPort },
      sessions: { rpcQueueTtlMs: 60_000, idleTimeoutMs: 0 },
      http: { enabled: true, host: '127.0.0.1', port: opsPort },
      log: { level: 'debug' },
    },
  });
  gateway = GatewayProcess.start(writeConfigFile(dir, config), { env: { COAP2MQTT_HTTP_PORT: String(opsPort) } });
  await gateway.ready();
  await gateway.waitForLog(/^upstream broker connected/);
  httpBase = `http://127.0.0.1:${httpPort}`;
  metricsBase = `http://127.0.0.1:${opsPort}`;
});

afterEach(() => {
  // Whatever a case sent, the process is still there to serve the next one.
  expect(gateway.running, gateway.describe()).toBe(true);
  tb.clear();
});

afterAll(async () => {
  await killAllGatewayProcesses();
  await tb?.close();
  await broker?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('deeply nested JSON from upstream', () => {
  it('an RPC nested 5,000 deep for a device observing /rpc is refused and answered upstream with an error; the next RPC is delivered', async () => {
    const { close, notifications } = await observer('/api/v1/boiler-token-7/rpc');
    try {
      await publishRaw('v1/gateway/rpc', `{"device":"Boiler-7","data":{"id":77,"method":"m","params":${nested(5000)}}}`);
      const [reply] = await eventually(() => (rpcReplies('Boiler-7').length > 0 ? rpcReplies('Boiler-7') : undefined), 5000, 'the error reply');
      expect(reply).toMatchObject({ device: 'Boiler-7', id: 77, data: { error: expect.stringMatching(/nest/) } });
      expect(await notifications()).toBeUndefined();

      await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 78, method: 'ok', params: { a: 1 } } });
      const next = await notifications();
      expect(JSON.parse(next!.payload.toString())).toEqual({ id: 78, method: 'ok', params: { a: 1 } });
      expect(gateway.logs().filter((line) => /nest/.test(String(line.msg)) || /nest/.test(String(line.reason)))).toHaveLength(1);
    } finally {
      await close();
    }
  });

  it('a shared attribute nested 8,000 deep reaches neither the observer nor the cache; later pushes do', async () => {
    const { close, notifications } = await observer('/api/v1/boiler-token-7/attributes');
    try {
      await publishRaw('v1/gateway/attributes', `{"device":"Boiler-7","data":{"deep":${nested(8000)}}}`);
      expect(await notifications()).toBeUndefined();
      await tb.publish('v1/gateway/attributes', { device: 'Boiler-7', data: { setpoint: 22 } });
      const next = await notifications();
      expect(next?.code).toBe('2.05');
      expect(JSON.parse(next!.payload.toString())).toEqual({ setpoint: 22 });
    } finally {
      await close();
    }
  });

  it('a deep shared attribute for a device without observer does not poison its cache or the cache file', async () => {
    await publishRaw('v1/gateway/attributes', `{"device":"Pump-2","data":{"deep":${nested(5000)}}}`);
    await tb.publish('v1/gateway/attributes', { device: 'Pump-2', data: { mode: 'eco' } });
    await tb.publish('v1/gateway/attributes', { device: 'Valve-3', data: { open: true } });
    const device = await UdpDevice.open(coapPort);
    try {
      device.send(get('/api/v1/pump-token-2/attributes', { observe: 0 }));
      const answer = await device.nextPacket();
      expect(answer?.code).toBe('2.05');
      expect(JSON.parse(answer!.payload.toString())).toEqual({ mode: 'eco' });
    } finally {
      device.close();
    }
    const file = join(stateDir, 'attributes.json');
    const written = await eventually(() => {
      try {
        const parsed = JSON.parse(readFileSync(file, 'utf8')) as { devices: Record<string, { shared: Record<string, unknown> }> };
        return parsed.devices['Valve-3']?.shared['open'] === true ? parsed : undefined;
      } catch {
        return undefined;
      }
    }, 5000, 'attributes.json with Valve-3');
    expect(written.devices['Pump-2']?.shared).toEqual({ mode: 'eco' });
  });

  it('a deep RPC for an HTTP long-poll is refused; the poll goes on and gets the next RPC', async () => {
    const poll = fetch(`${httpBase}/api/v1/valve-token-3/rpc?timeout=10000`);
    await sleep(200);
    await publishRaw('v1/gateway/rpc', `{"device":"Valve-3","data":{"id":5,"method":"m","params":${nested(5000)}}}`);
    await eventually(() => (rpcReplies('Valve-3').length > 0 ? true : undefined), 5000, 'the error reply');
    await tb.publish('v1/gateway/rpc', { device: 'Valve-3', data: { id: 6, method: 'ok', params: {} } });
    const response = await poll;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: 6, method: 'ok', params: {} });
  });
});

describe('size, ids and names', () => {
  it('refuses a 10 MB RPC without delivering it', async () => {
    const { close, notifications } = await observer('/api/v1/boiler-token-7/rpc');
    try {
      const huge = JSON.stringify({ device: 'Boiler-7', data: { id: 90, method: 'big', params: { blob: 'x'.repeat(10 * 1024 * 1024) } } });
      await publishRaw('v1/gateway/rpc', huge);
      await eventually(() => gateway.logs().find((line) => /larger than upstream\.maxDownlinkBytes/.test(String(line.reason))), 10_000, 'the refusal logged');
      expect(await notifications()).toBeUndefined();
      await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 91, method: 'small', params: {} } });
      expect(JSON.parse((await notifications())!.payload.toString())).toMatchObject({ id: 91 });
    } finally {
      await close();
    }
  });

  it('refuses RPC ids ThingsBoard could not take back (negative, fractional, beyond a Java int)', async () => {
    const { close, notifications } = await observer('/api/v1/boiler-token-7/rpc');
    try {
      for (const id of ['-1', '1.5', '2147483648', '"7"', 'null']) {
        await publishRaw('v1/gateway/rpc', `{"device":"Boiler-7","data":{"id":${id},"method":"m","params":{}}}`);
      }
      expect(await notifications()).toBeUndefined();
      await publishRaw('v1/gateway/rpc', '{"device":"Boiler-7","data":{"id":2147483647,"method":"m","params":{}}}');
      expect(JSON.parse((await notifications())!.payload.toString())).toMatchObject({ id: 2147483647 });
    } finally {
      await close();
    }
  });

  it('drops RPCs and pushes for 3,000 device names it does not know, __proto__ among them, with one log line each kind', async () => {
    const before = gateway.logs().length;
    const pendingBefore = await metric(/^coap2mqtt_rpc_pending /);
    for (let i = 0; i < 3000; i++) {
      const name = i === 0 ? '__proto__' : i === 1 ? 'constructor' : `Stranger-${i}`;
      await tb.publish('v1/gateway/rpc', { device: name, data: { id: i, method: 'm', params: {} } });
    }
    await tb.publish('v1/gateway/attributes', { device: '__proto__', data: { x: 1 } });
    await tb.publish('v1/gateway/attributes', { device: 'Stranger-1', data: { x: 1 } });
    await eventuallyAsync(async () => /\s3002$/.test((await metric(/^coap2mqtt_upstream_refused_messages_total\{reason="unknown_device"\}/)) ?? ''), 10_000, 'all counted');
    // Not queued, not tracked: nothing is held for them.
    expect(await metric(/^coap2mqtt_rpc_pending /)).toBe(pendingBefore);
    const lines = gateway.logs().slice(before).filter((line) => /does not know/.test(String(line.msg)));
    expect(lines).toHaveLength(2);
    // Nothing answered upstream for a name ThingsBoard might then create as a device.
    expect(rpcReplies('__proto__')).toHaveLength(0);
  });

  it('keeps __proto__ as an ordinary shared attribute key, in the observer\'s notification and the cache', async () => {
    const { close, notifications } = await observer('/api/v1/valve-token-3/attributes');
    try {
      await publishRaw('v1/gateway/attributes', '{"device":"Valve-3","data":{"__proto__":{"polluted":1},"b":2}}');
      const pushed = await notifications();
      expect(Object.keys(JSON.parse(pushed!.payload.toString()) as object)).toEqual(['__proto__', 'b']);
    } finally {
      await close();
    }
    // A new observer's initial state comes from the cache.
    const again = await observer('/api/v1/valve-token-3/attributes');
    await again.close();
    expect(JSON.parse(again.registered.payload.toString())).toMatchObject({ b: 2 });
    expect(Object.keys(JSON.parse(again.registered.payload.toString()) as object)).toContain('__proto__');
    const file = join(stateDir, 'attributes.json');
    await eventually(() => readFileSync(file, 'utf8').includes('"__proto__":{"polluted":1}') || undefined, 5000, 'the key in attributes.json');
  });
});
