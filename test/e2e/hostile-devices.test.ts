// What a stranger on the site LAN, without any token, can make the gateway hold. The gateway remembers
// answers to repeat them to retransmissions (RFC 7252 §4.5) and reassembles Block1 uploads before it knows
// who sends them; both must be bounded in bytes, per source address and in total, and must not echo a
// request's size back. Bare UDP sockets on 127.0.0.1 and 127.0.0.2 are the stranger and a device.
import * as coapPacket from 'coap-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, get } from '../helpers/udp-device.js';

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;

/** The smallest table the configuration allows: one source address may then hold 64 KiB of answers. */
const DEDUP_MAX_BYTES = 1_048_576;
const SOURCE_SHARE = DEDUP_MAX_BYTES / 16;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    coap: { host: '127.0.0.1', port: 0, dedupMaxBytes: DEDUP_MAX_BYTES },
    // The stranger's requests must reach the message layer, not be refused by a rate limit first.
    limits: { deviceRequestsPerSecond: 0, unknownTokenFailures: 0 },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

async function metric(name: string): Promise<number> {
  const { address, port } = gw.gateway.httpAddress!;
  const text = await (await fetch(`http://${address}:${port}/metrics`)).text();
  const line = text.split('\n').find((each) => each.startsWith(`${name} `));
  return Number(line?.split(' ')[1]);
}

const request = (code: 'GET' | 'POST', messageId: number, segments: Buffer[], options: coapPacket.Option[] = [], payload?: Buffer): Buffer =>
  coapPacket.generate(
    { code, confirmable: true, messageId, token: Buffer.from([messageId & 0xff]), options: [...segments.map((value) => ({ name: 'Uri-Path' as const, value })), ...options], ...(payload ? { payload } : {}) },
    65_507,
  );

/** Sends `datagram` and returns the gateway's answer to it. */
async function exchange(device: UdpDevice, datagram: Buffer): Promise<coapPacket.ParsedPacket> {
  device.send(datagram);
  const answer = await device.nextPacket(2000);
  if (!answer) throw new Error('no answer');
  return answer;
}

describe('answers to strangers', () => {
  it('refuses a 59 KB path (230 Uri-Path options of 255 bytes) in a few bytes, echoing nothing', async () => {
    const stranger = await UdpDevice.open(gw.port);
    try {
      const segments = Array.from({ length: 230 }, () => Buffer.alloc(255, 0x61));
      const answer = await exchange(stranger, request('GET', 1, segments));
      expect(answer.code).toBe('4.00');
      expect(answer.payload.toString()).toBe('request URI longer than 2048 bytes');
      expect(answer.options.find((option) => option.name === 'Block2')).toBeUndefined();
    } finally {
      stranger.close();
    }
  });

  it('names an unknown path in a short diagnostic, never the whole request', async () => {
    const stranger = await UdpDevice.open(gw.port);
    try {
      const segments = Array.from({ length: 8 }, () => Buffer.alloc(250, 0x62));
      const answer = await exchange(stranger, request('GET', 2, segments));
      expect(answer.code).toBe('4.04');
      expect(answer.payload.length).toBeLessThanOrEqual(200);
      expect(answer.payload.toString()).toMatch(/^no such path \/b{62}…; the device API lives under/);
      expect(answer.options.find((option) => option.name === 'Block2')).toBeUndefined();
    } finally {
      stranger.close();
    }
  });
});

describe('answers remembered for retransmissions', () => {
  it('keeps one address within its share of the table; a device elsewhere is still answered from it', async () => {
    const stranger = await UdpDevice.open(gw.port);
    const device = await UdpDevice.open(gw.port, '127.0.0.1', '127.0.0.2');
    try {
      // Each 4.04 names the path: ~170 bytes kept per request, so 1,000 of them are far over 64 KiB.
      const path = [Buffer.from('nothing-here'), Buffer.alloc(40, 0x63)];
      for (let id = 100; id < 1100; id++) expect((await exchange(stranger, request('GET', id, path))).code).toBe('4.04');
      expect(await metric('coap2mqtt_coap_dedup_bytes')).toBeLessThanOrEqual(SOURCE_SHARE);
      expect(await metric('coap2mqtt_coap_answers_not_kept_total')).toBeGreaterThan(0);
      expect(gw.logs.filter((line) => /holds its share of the answers remembered/.test(String(line['msg'])))).toHaveLength(1);

      // Over its share, a retransmitted GET is handled again; a retransmitted POST is not answered twice.
      expect((await exchange(stranger, request('GET', 1099, path))).code).toBe('4.04');
      expect((await exchange(stranger, request('POST', 1200, path))).code).toBe('4.04');
      stranger.send(request('POST', 1200, path));
      expect(await stranger.next(500)).toBeUndefined();

      // Another address still has its answers kept and repeated byte for byte, without handling them again.
      const read = get('/api/v1/boiler-token-7/attributes', { messageId: 7, token: Buffer.from('rd') });
      device.send(read);
      const first = await device.next();
      const duplicatesBefore = await metric('coap2mqtt_coap_duplicates_total');
      device.send(read);
      expect(await device.next()).toEqual(first);
      expect(await metric('coap2mqtt_coap_duplicates_total')).toBe(duplicatesBefore + 1);
    } finally {
      await sleep(50);
      stranger.close();
      device.close();
    }
  });
});

describe('Block1 uploads from strangers', () => {
  it('gives one address at most a sixteenth of the uploads in progress (4.29 with Max-Age beyond), others still start theirs', async () => {
    const stranger = await UdpDevice.open(gw.port);
    const device = await UdpDevice.open(gw.port, '127.0.0.1', '127.0.0.2');
    const firstBlock = (id: number, token: string): Buffer =>
      request(
        'POST',
        id,
        ['api', 'v1', token, 'telemetry'].map((segment) => Buffer.from(segment)),
        [{ name: 'Block1', value: Buffer.from([0x08]) }], // num 0, more, 16-byte blocks
        Buffer.alloc(16, 0x20),
      );
    try {
      // coap.maxBlockTransfers is 500 by default: 32 per address.
      for (let id = 0; id < 32; id++) expect((await exchange(stranger, firstBlock(2000 + id, `no-such-token-${id}`))).code).toBe('2.31');
      const refused = await exchange(stranger, firstBlock(2100, 'no-such-token-x'));
      expect(refused.code).toBe('4.29');
      expect(refused.options.find((option) => option.name === 'Max-Age')?.value).toEqual(Buffer.from([10]));
      expect((await exchange(device, firstBlock(3000, 'boiler-token-7'))).code).toBe('2.31');
    } finally {
      stranger.close();
      device.close();
    }
  });
});
