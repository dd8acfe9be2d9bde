// Fuzzing a real gateway process from upstream: random and mutated Gateway-API JSON on every topic it
// subscribes to, while devices observe /rpc and /attributes, read attributes and make client-side RPCs, so
// every downlink path has someone waiting at its end. The process must stay up, keep its one upstream
// connection (no reconnect), answer no device 5.00, and still deliver a valid RPC afterwards.
//
// Deterministic: a fixed seed unless UPSTREAM_FUZZ_SEED is set; the seed is printed to replay a run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GatewayProcess, gatewayConfig, killAllGatewayProcesses, writeConfigFile } from '../helpers/gateway-process.js';
import { NUMBER_LITERALS, deepNesting, jsonObject, jsonValue, mutate, stringLiteral } from '../helpers/json-fuzz.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventuallyAsync, freeTcpPort, freeUdpPort, sleep } from '../helpers/ports.js';
import { Random } from '../helpers/random.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, emptyReply, get, post } from '../helpers/udp-device.js';

const DEVICES = [
  { name: 'Boiler-7', type: 'thermostat', token: 'boiler-token-7' },
  { name: 'Pump-2', type: 'pump', token: 'pump-token-2' },
];
const SEED = 20_261_206;
const MESSAGES = 3000;

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gateway: GatewayProcess;
let coapPort: number;
let metricsBase: string;
const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-upstream-fuzz-'));

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  coapPort = await freeUdpPort();
  const opsPort = await freeTcpPort();
  const config = gatewayConfig({
    port: coapPort,
    brokerUrl: broker.url,
    stateDir: join(dir, 'state'),
    devices: DEVICES,
    extra: {
      sessions: { attributeRequestTimeoutMs: 500, clientRpcTimeoutMs: 500, idleTimeoutMs: 0 },
      http: { enabled: true, host: '127.0.0.1', port: opsPort },
    },
  });
  gateway = GatewayProcess.start(writeConfigFile(dir, config), { env: { COAP2MQTT_HTTP_PORT: String(opsPort) } });
  await gateway.ready();
  await gateway.waitForLog(/^upstream broker connected/);
  metricsBase = `http://127.0.0.1:${opsPort}`;
});

afterAll(async () => {
  await killAllGatewayProcesses();
  await tb?.close();
  await broker?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const NAMES = ['Boiler-7', 'Pump-2', 'Stranger', '__proto__', 'constructor', '', 'Boiler-7\u0000', 'x'.repeat(300)];

function deviceName(random: Random): string {
  return random.chance(0.8) ? JSON.stringify(random.pick(NAMES)) : jsonValue(random, 1);
}

/** Anything, now and then nested far deeper than JSON.stringify survives (about 5,000 levels). */
function anyValue(random: Random): string {
  if (random.chance(0.05)) {
    const depth = random.pick([5000, 8000, 20_000]);
    return `${'['.repeat(depth)}${']'.repeat(depth)}`;
  }
  return random.chance(0.1) ? deepNesting(random) : jsonValue(random, 0);
}

/** A message of the Gateway API's shape for `topic`, with parts replaced by anything at all. */
function messageFor(random: Random, topic: string): string {
  const id = random.chance(0.7) ? String(random.int(0, 50)) : random.pick([...NUMBER_LITERALS, '"5"', 'null', '[]']);
  switch (topic) {
    case 'v1/gateway/rpc':
      return random.pick([
        `{"device":${deviceName(random)},"data":{"id":${id},"method":${stringLiteral(random)},"params":${anyValue(random)}}}`,
        `{"device":${deviceName(random)},"data":${anyValue(random)}}`,
        `{"device":${deviceName(random)},"id":${id},"data":${anyValue(random)}}`,
        `{"device":${deviceName(random)},"data":{"id":${id},"method":${anyValue(random)}}}`,
      ]);
    case 'v1/gateway/attributes':
      return random.pick([
        `{"device":${deviceName(random)},"data":${jsonObject(random, 1)}}`,
        `{"device":${deviceName(random)},"data":{"deleted":${anyValue(random)}}}`,
        `{"device":${deviceName(random)},"data":{"__proto__":${anyValue(random)},"constructor":{"prototype":{"x":1}}}}`,
        `{"device":${deviceName(random)},"data":{"k":${anyValue(random)}}}`,
      ]);
    case 'v1/gateway/attributes/response':
      return random.pick([
        `{"id":${id},"device":${deviceName(random)},"value":${anyValue(random)}}`,
        `{"id":${id},"device":${deviceName(random)},"values":${random.chance(0.5) ? jsonObject(random, 1) : anyValue(random)}}`,
        `{"id":${id}}`,
      ]);
    default:
      return anyValue(random);
  }
}

function fuzzedPublish(random: Random): { topic: string; payload: Buffer } {
  const topic = random.pick([
    'v1/gateway/rpc',
    'v1/gateway/attributes',
    'v1/gateway/attributes/response',
    `v1/devices/me/rpc/response/${random.chance(0.8) ? random.int(0, 50) : random.pick(['x', '-1', '1e3', '99999999999999999999'])}`,
  ]);
  let payload: Buffer = Buffer.from(messageFor(random, topic));
  if (random.chance(0.25)) payload = mutate(random, payload);
  if (random.chance(0.02)) payload = Buffer.concat([payload, Buffer.alloc(random.pick([70_000, 300_000]), 0x20)]);
  return { topic, payload };
}

/** A device that keeps every downlink path busy and acknowledges whatever the gateway sends it. */
async function busyDevice(token: string): Promise<{ codes: string[]; stop: () => Promise<void> }> {
  const device = await UdpDevice.open(coapPort);
  const codes: string[] = [];
  let running = true;
  device.send(get(`/api/v1/${token}/rpc`, { observe: 0, token: Buffer.from('r1') }));
  device.send(get(`/api/v1/${token}/attributes`, { observe: 0, token: Buffer.from('a1') }));
  const listening = (async () => {
    while (running) {
      const packet = await device.nextPacket(200);
      if (!packet) continue;
      codes.push(packet.code);
      if (packet.confirmable) device.send(emptyReply('ack', packet.messageId));
    }
  })();
  const asking = (async () => {
    while (running) {
      device.send(get(`/api/v1/${token}/attributes`, { query: ['sharedKeys=setpoint,mode'] }));
      device.send(post(`/api/v1/${token}/rpc`, '{"method":"getTime","params":{}}'));
      await sleep(50);
    }
  })();
  return {
    codes,
    async stop() {
      running = false;
      await Promise.all([listening, asking]);
      device.close();
    },
  };
}

it(`survives ${MESSAGES} random and mutated Gateway-API messages on every subscribed topic`, async () => {
  const random = Random.fromEnv('UPSTREAM_FUZZ_SEED', SEED);
  console.log(`upstream fuzz seed ${random.seed} (UPSTREAM_FUZZ_SEED=${random.seed} replays it)`);
  const devices = await Promise.all(DEVICES.map((device) => busyDevice(device.token)));
  try {
    const started = Date.now();
    // In windows of 50 publishes: the broker keeps their order, and the run stays short.
    for (let i = 0; i < MESSAGES && gateway.running; i += 50) {
      const window = Array.from({ length: Math.min(50, MESSAGES - i) }, () => fuzzedPublish(random));
      await Promise.all(window.map(({ topic, payload }) => tb.publishRaw(topic, payload)));
    }
    console.log(`published ${MESSAGES} in ${Date.now() - started} ms`);
    await sleep(1000);
  } finally {
    await Promise.all(devices.map((device) => device.stop()));
  }
  expect(gateway.running, gateway.describe()).toBe(true);
  const metrics = await (await fetch(`${metricsBase}/metrics`)).text();
  expect(metrics).toMatch(/^coap2mqtt_upstream_reconnects_total 0$/m);
  expect(metrics).toMatch(/^coap2mqtt_upstream_connected 1$/m);
  expect(metrics).toMatch(/^coap2mqtt_coap_handler_errors_total 0$/m);
  for (const device of devices) expect(device.codes).not.toContain('5.00');
  expect(gateway.logs().filter((line) => Number(line.level) >= 50 || line.level === 'error' || line.level === 'fatal')).toEqual([]);
  // Refusals are logged once per subscribed topic and reason (10 minutes), however many arrive.
  const refusalLines = gateway.logs().filter((line) => /^(refused|dropped) a message from upstream/.test(String(line.msg)));
  expect(refusalLines.length).toBeGreaterThan(0);
  expect(refusalLines.length).toBeLessThanOrEqual(4 * 6);

  // And it still does its job.
  const check = await UdpDevice.open(coapPort);
  try {
    check.send(get('/api/v1/pump-token-2/rpc', { observe: 0, token: Buffer.from('ok') }));
    expect((await check.nextPacket())?.code).toBe('2.03');
    await tb.publish('v1/gateway/rpc', { device: 'Pump-2', data: { id: 4242, method: 'afterFuzz', params: {} } });
    const notification = await eventuallyAsync(async () => {
      const packet = await check.nextPacket(500);
      if (packet?.confirmable) check.send(emptyReply('ack', packet.messageId));
      // Only the RPC's notification counts: a packet without a body (an empty message, or a 2.03 that
      // checks the relation is still wanted) is not it, and is no JSON to parse.
      if (!packet || packet.payload.length === 0) return undefined;
      return (JSON.parse(packet.payload.toString()) as { id?: unknown }).id === 4242 ? packet : undefined;
    }, 5000, 'the RPC after the fuzz');
    expect(notification.code).toBe('2.05');
  } finally {
    await sleep(50);
    check.close();
  }
}, 90_000);
