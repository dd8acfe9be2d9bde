// Device-facing protection end to end, through real sockets: per-device and gateway-wide limits answered
// 4.29 with Max-Age, retransmissions never refused, and an address blocked for guessing tokens while
// another address and a DTLS-identified device go on being served.
import * as coapPacket from 'coap-packet';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { DEVICES, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, get, post } from '../helpers/udp-device.js';

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway | undefined;
const devices: UdpDevice[] = [];

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
});

afterAll(async () => {
  await tb?.close();
  await broker?.dispose();
});

beforeEach(() => tb.clear());

afterEach(async () => {
  for (const device of devices.splice(0)) device.close();
  await gw?.stop();
  gw = undefined;
});

async function gatewayWith(limits: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  gw = await startTestGateway({ upstream: { url: broker.url, accessToken: 'gw' }, limits, ...extra });
  await gw.upstreamConnected();
  return gw;
}

async function deviceOn(port: number, localAddress?: string): Promise<UdpDevice> {
  const device = await UdpDevice.open(port, '127.0.0.1', localAddress);
  devices.push(device);
  return device;
}

/** The next `count` answers, whatever order the gateway sends them in (4.29s go out before 2.01s). */
async function answers(device: UdpDevice, count: number): Promise<coapPacket.ParsedPacket[]> {
  const received: coapPacket.ParsedPacket[] = [];
  for (let i = 0; i < count; i++) {
    const packet = await device.nextPacket(3000);
    if (!packet) throw new Error(`expected ${count} answers, got ${received.length}: ${received.map((p) => p.code).join(' ')}`);
    received.push(packet);
  }
  return received;
}

const maxAgeOf = (packet: coapPacket.ParsedPacket | undefined): number | undefined => {
  const option = packet?.options.find((o) => o.name === 'Max-Age');
  return option ? option.value.reduce((value, byte) => value * 256 + byte, 0) : undefined;
};

const readingsOf = (name: string): number =>
  tb.on('v1/gateway/telemetry').reduce((sum, message) => sum + ((message.json as Record<string, unknown[]>)[name]?.length ?? 0), 0);

const telemetry = (token: string): string => `/api/v1/${token}/telemetry`;
const BOILER = DEVICES[0]!.token;
const PUMP = DEVICES[1]!.token;

describe('per-device limit', () => {
  it('answers a burst beyond a device\'s limit 4.29 with Max-Age, forwards only what it accepted, and still serves another device', async () => {
    const gw = await gatewayWith({ deviceRequestsPerSecond: 1, deviceBurst: 3 });
    const device = await deviceOn(gw.port);
    for (let n = 0; n < 6; n++) device.send(post(telemetry(BOILER), `{"n":${n}}`, { token: Buffer.from([0xb0, n]) }));
    const got = await answers(device, 6);

    expect(got.filter((p) => p.code === '2.01')).toHaveLength(3);
    const refused = got.filter((p) => p.code === '4.29');
    expect(refused).toHaveLength(3);
    for (const packet of refused) {
      expect(packet.ack).toBe(true);
      expect(maxAgeOf(packet)).toBeGreaterThanOrEqual(1);
      expect(packet.payload.toString()).toMatch(/too many requests from this device \(limit 1\/s, burst 3\)/);
    }

    const pump = await coapClient(gw.uri(telemetry(PUMP)), ['-m', 'post', '-e', '{"flow":1}']);
    expect(pump.response?.code).toBe('2.01');

    await eventually(() => readingsOf('Boiler-7') === 3, 5000, 'the three accepted readings upstream');
    await sleep(300);
    expect(readingsOf('Boiler-7')).toBe(3);
    expect(gw.gateway.limits.stats()).toMatchObject({ refusedDevice: 3, refusedGlobal: 0, refusedBlockedAddress: 0 });
    const warnings = gw.logs.filter((line) => line.level === 'warn' && line.component === 'limits');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ device: 'Boiler-7', deviceRequestsPerSecond: 1, deviceBurst: 3 });
  });

  it('answers retransmissions of an accepted request from the cache, never 4.29, and does not count them', async () => {
    const gw = await gatewayWith({ deviceRequestsPerSecond: 1, deviceBurst: 2 });
    const device = await deviceOn(gw.port);
    const first = post(telemetry(BOILER), '{"n":1}', { messageId: 5001, token: Buffer.from('r1') });
    device.send(first);
    const [accepted] = await answers(device, 1);
    expect(accepted?.code).toBe('2.01');

    // A device that missed the ACK retransmits the same message, here three times in quick succession.
    for (let i = 0; i < 3; i++) device.send(first);
    for (const retransmission of await answers(device, 3)) expect(retransmission).toEqual(accepted);

    // Had the retransmissions counted, the bucket (burst 2) would be empty now.
    device.send(post(telemetry(BOILER), '{"n":2}', { messageId: 5002, token: Buffer.from('r2') }));
    expect((await answers(device, 1))[0]?.code).toBe('2.01');
    device.send(post(telemetry(BOILER), '{"n":3}', { messageId: 5003, token: Buffer.from('r3') }));
    const over = (await answers(device, 1))[0];
    expect(over?.code).toBe('4.29');

    // The refused one's retransmission gets the same 4.29, and the accepted one's still its 2.01.
    device.send(post(telemetry(BOILER), '{"n":3}', { messageId: 5003, token: Buffer.from('r3') }));
    device.send(first);
    const again = await answers(device, 2);
    expect(again.map((p) => p.code).sort()).toEqual(['2.01', '4.29']);

    expect(gw.gateway.messageLayer.stats.duplicates).toBe(5);
    expect(gw.gateway.limits.stats().refusedDevice).toBe(1);
    await eventually(() => readingsOf('Boiler-7') === 2, 5000, 'the two accepted readings upstream');
    await sleep(300);
    expect(readingsOf('Boiler-7')).toBe(2);
  });

  it('never bothers a device reporting at a sane pace with the default limits', async () => {
    gw = await startTestGateway({ upstream: { url: broker.url, accessToken: 'gw' } });
    await gw.upstreamConnected();
    const device = await deviceOn(gw.port);
    for (let n = 0; n < 40; n++) {
      device.send(post(telemetry(BOILER), `{"n":${n}}`));
      expect((await device.nextPacket())?.code).toBe('2.01');
    }
    expect(gw.gateway.limits.stats()).toMatchObject({ refusedDevice: 0, refusedGlobal: 0, refusedBlockedAddress: 0 });
  });
});

describe('gateway-wide limit', () => {
  it('answers new requests beyond it 4.29 whatever device or path they are for, and admits again a second later', async () => {
    const gw = await gatewayWith({ requestsPerSecond: 1, burst: 3, deviceRequestsPerSecond: 0 });
    const device = await deviceOn(gw.port);
    const boiler = post(telemetry(BOILER), '{"g":1}', { messageId: 6001, token: Buffer.from('g1') });
    device.send(boiler);
    device.send(post(telemetry(PUMP), '{"g":2}', { messageId: 6002, token: Buffer.from('g2') }));
    device.send(get('/hello', { messageId: 6003, token: Buffer.from('g3') }));
    const admitted = await answers(device, 3);
    expect(admitted.map((p) => p.code).sort()).toEqual(['2.01', '2.01', '4.04']);

    device.send(post(telemetry(PUMP), '{"g":3}', { messageId: 6004, token: Buffer.from('g4') }));
    const [refused] = await answers(device, 1);
    expect(refused?.code).toBe('4.29');
    expect(maxAgeOf(refused)).toBe(1);
    expect(refused?.payload.toString()).toMatch(/gateway is busy/);

    // Neither a retransmission nor an Observe deregistration is refused while the limit holds.
    device.send(boiler);
    expect((await answers(device, 1))[0]?.code).toBe('2.01');
    device.send(get(`/api/v1/${BOILER}/rpc`, { observe: 1, messageId: 6005, token: Buffer.from('g5') }));
    expect((await answers(device, 1))[0]?.code).toBe('2.05');

    expect(gw.gateway.limits.stats()).toMatchObject({ refusedGlobal: 1, refusedDevice: 0 });
    await sleep(1100);
    const later = await coapClient(gw.uri(telemetry(PUMP)), ['-m', 'post', '-e', '{"g":4}']);
    expect(later.response?.code).toBe('2.01');
  });
});

describe('unknown-token block', () => {
  const PSK = { identity: 'psk-guarded', key: 'a pre-shared key of some length' };
  const PSK_TOKEN = 'psk-guarded-token';

  it('blocks an address after many unknown tokens (then a valid token from it gets 4.29 too), leaves other addresses and DTLS devices alone, and lifts the block in time', async () => {
    const gw = await gatewayWith(
      { unknownTokenFailures: 3, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 2000 },
      { dtls: { enabled: true, port: 0 }, devices: [...DEVICES, { name: 'Psk-Guarded', token: PSK_TOKEN, psk: PSK }] },
    );
    const guesser = await deviceOn(gw.port);
    const neighbour = await deviceOn(gw.port, '127.0.0.2');

    // The same wrong token again and again counts once: a device with a stale token is never blocked.
    for (let i = 0; i < 5; i++) guesser.send(post(telemetry('stale-token'), '{}'));
    for (const answer of await answers(guesser, 5)) expect(answer.code).toBe('4.01');
    for (const guess of ['guess-aaaa', 'guess-bbbb']) guesser.send(post(telemetry(guess), '{}'));
    for (const answer of await answers(guesser, 2)) expect(answer.code).toBe('4.01');

    // Three different unknown tokens: blocked. A valid token from there is refused now, and so is a guess.
    guesser.send(post(telemetry(BOILER), '{"blocked":true}'));
    const [refused] = await answers(guesser, 1);
    expect(refused?.code).toBe('4.29');
    expect(maxAgeOf(refused)).toBeGreaterThanOrEqual(1);
    expect(maxAgeOf(refused)).toBeLessThanOrEqual(2);
    expect(refused?.payload.toString()).toMatch(/too many unknown access tokens from this address/);
    guesser.send(post(telemetry('guess-cccc'), '{}'));
    expect((await answers(guesser, 1))[0]?.code).toBe('4.29');
    const client = await coapClient(gw.uri(telemetry(PUMP)), ['-m', 'post', '-e', '{"flow":2}']);
    expect(client.response?.code).toBe('4.29');
    expect(Number(client.response?.options.get('Max-Age')?.[0])).toBeGreaterThanOrEqual(1);

    // Another address is served, and so is a DTLS-identified device on the blocked one.
    neighbour.send(post(telemetry(BOILER), '{"neighbour":true}'));
    expect((await answers(neighbour, 1))[0]?.code).toBe('2.01');
    // A PSK device is identified by its session, with or without its own token in the path.
    for (const path of ['/api/v1/telemetry', telemetry(PSK_TOKEN)]) {
      const dtls = await coapClient(
        `coaps://127.0.0.1:${gw.gateway.dtlsAddress!.port}${path}`,
        ['-u', PSK.identity, '-k', PSK.key, '-m', 'post', '-e', '{"dtls":true}'],
        { binary: 'coap-client-openssl' },
      );
      expect(dtls.response?.code).toBe('2.01');
    }

    expect(gw.gateway.limits.stats()).toMatchObject({ addressesBlocked: 1, addressBlocks: 1, refusedBlockedAddress: 3 });
    const blocks = gw.logs.filter((line) => line.component === 'limits' && line.level === 'warn');
    expect(blocks).toHaveLength(1);
    expect(blocks[0]).toMatchObject({ peer: '127.0.0.1', blocked: '127.0.0.1', unknownTokens: 3, blockMs: 2000 });
    expect(gw.logs.filter((line) => line.component === 'limits' && line.level === 'info')).toEqual([]);
    const logText = JSON.stringify(gw.logs);
    for (const token of ['stale-token', 'guess-aaaa', 'guess-bbbb', 'guess-cccc', BOILER, PUMP, PSK_TOKEN]) expect(logText).not.toContain(token);

    await sleep(2100);
    guesser.send(post(telemetry(BOILER), '{"unblocked":true}'));
    expect((await answers(guesser, 1))[0]?.code).toBe('2.01');
    expect(gw.gateway.limits.stats().addressesBlocked).toBe(0);
  });
});
