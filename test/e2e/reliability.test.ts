// Message-layer behaviour seen from outside: retransmissions answered from the cache and published once,
// separate responses when the broker is slow, and garbage that changes nothing. These gateways answer
// after the PUBACK (outbox off), so a slow broker means a slow answer; the outbox's own are in outbox.test.ts.
import * as coapPacket from 'coap-packet';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, sleep } from '../helpers/ports.js';
import { DelayingTcpProxy, LossyUdpProxy } from '../helpers/proxies.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, post } from '../helpers/udp-device.js';

let broker: Mosquitto;
let slowLink: DelayingTcpProxy;
let gw: TestGateway;
let tb: ThingsBoardDouble;

beforeAll(async () => {
  broker = await Mosquitto.start();
  slowLink = await DelayingTcpProxy.start(broker.port);
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({ upstream: { url: `mqtt://127.0.0.1:${slowLink.port}`, accessToken: 'gw' }, outbox: { enabled: false } });
  await eventually(() => gw.gateway.upstream.connected, 5000, 'upstream connection');
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await slowLink?.close();
  await broker?.dispose();
});

beforeEach(() => {
  tb.clear();
  slowLink.delayMs = 0;
});

const telemetryCount = (): number => tb.on('v1/gateway/telemetry').length;

describe('retransmitted requests', () => {
  it('answers a CON retransmitted after a lost ACK from the cache, and publishes it once', async () => {
    // The first answer from the gateway is lost on the way back; coap-client retransmits the same message.
    const proxy = await LossyUdpProxy.start(gw.port, (_datagram, index) => index === 0);
    try {
      const duplicatesBefore = gw.gateway.messageLayer.stats.duplicates;
      const result = await coapClient(`coap://127.0.0.1:${proxy.port}/api/v1/boiler-token-7/telemetry`, ['-m', 'post', '-e', '{"retransmitted":true}']);
      expect(proxy.dropped).toBe(1);
      expect(result.response?.code).toBe('2.01');
      // coap-client does not print its retransmission; the gateway saw it as a duplicate.
      expect(gw.gateway.messageLayer.stats.duplicates - duplicatesBefore).toBe(1);
      await tb.waitFor('v1/gateway/telemetry');
      await sleep(300);
      expect(telemetryCount()).toBe(1);
    } finally {
      proxy.close();
    }
  });

  it('replays the same answer to a duplicate CON datagram without handling it again', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      const datagram = post('/api/v1/boiler-token-7/telemetry', '{"dup":1}', { messageId: 4242, token: Buffer.from('ab') });
      device.send(datagram);
      const first = await device.nextPacket();
      device.send(datagram);
      const second = await device.nextPacket();
      expect(first?.code).toBe('2.01');
      expect(first?.ack).toBe(true);
      expect(second).toEqual(first);
      await sleep(300);
      expect(telemetryCount()).toBe(1);
    } finally {
      device.close();
    }
  });

  it('handles a duplicate NON once', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      const datagram = post('/api/v1/boiler-token-7/telemetry', '{"nondup":1}', { messageId: 777, confirmable: false });
      device.send(datagram);
      const first = await device.nextPacket();
      device.send(datagram);
      const answers = [first, await device.nextPacket()];
      expect(answers.map((a) => a?.code)).toEqual(['2.01', '2.01']);
      expect(answers.every((a) => a && !a.ack && !a.confirmable)).toBe(true);
      await sleep(300);
      expect(telemetryCount()).toBe(1);
    } finally {
      device.close();
    }
  });

  it('treats the same message id from another source port as a new message', async () => {
    const [a, b] = [await UdpDevice.open(gw.port), await UdpDevice.open(gw.port)];
    try {
      a.send(post('/api/v1/boiler-token-7/telemetry', '{"from":"a"}', { messageId: 9 }));
      b.send(post('/api/v1/boiler-token-7/telemetry', '{"from":"b"}', { messageId: 9 }));
      expect((await a.nextPacket())?.code).toBe('2.01');
      expect((await b.nextPacket())?.code).toBe('2.01');
      // Both readings go up, whether in one publish (same turn of the event loop) or two.
      const readings = await tb.waitForReadings('Boiler-7', 2);
      expect(readings.map((reading) => (reading as { values: { from: string } }).values.from).sort()).toEqual(['a', 'b']);
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('slow upstream', () => {
  it('sends an empty ACK at once and the 2.01 as a separate CON response once the PUBACK arrives', async () => {
    slowLink.delayMs = 1200;
    const result = await coapClient(gw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', '{"slow":true}']);
    // coap-client does not print the empty ACK; the 2.01 arriving as a CON of its own shows it was separate.
    expect(result.response?.type).toBe('CON');
    expect(result.response?.code).toBe('2.01');
    await sleep(300);
    expect(telemetryCount()).toBe(1);
  });

  it('keeps answering a retransmission with the empty ACK while the answer is pending, and publishes once', async () => {
    slowLink.delayMs = 1500;
    const device = await UdpDevice.open(gw.port);
    try {
      const datagram = post('/api/v1/pump-token-2/telemetry', '{"pending":1}', { messageId: 31337, token: Buffer.from('cafe', 'hex') });
      device.send(datagram);
      const emptyAck = await device.nextPacket();
      expect(emptyAck?.code).toBe('0.00');
      expect(emptyAck?.ack).toBe(true);
      device.send(datagram);
      const again = await device.nextPacket();
      expect(again?.code).toBe('0.00');
      const separate = await device.nextPacket(3000);
      expect(separate?.confirmable).toBe(true);
      expect(separate?.code).toBe('2.01');
      expect(separate?.token.toString('hex')).toBe('cafe');
      // Not acknowledged by us: the gateway retransmits its separate response.
      const retransmission = await device.nextPacket(4000);
      expect(retransmission?.messageId).toBe(separate?.messageId);
      device.send(coapPacket.generate({ code: '0.00', ack: true, messageId: separate!.messageId }));
      expect(await device.nextPacket(3500)).toBeUndefined();
      expect(telemetryCount()).toBe(1);
    } finally {
      device.close();
    }
  });

  it('answers 5.03 with Max-Age when the broker does not acknowledge in time', async () => {
    const slowGw = await startTestGateway({
      upstream: { url: `mqtt://127.0.0.1:${slowLink.port}`, accessToken: 'gw', publishTimeoutMs: 1000 },
      outbox: { enabled: false },
    });
    try {
      await eventually(() => slowGw.gateway.upstream.connected, 5000, 'upstream connection');
      slowLink.delayMs = 2500;
      const result = await coapClient(slowGw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', '{"late":1}']);
      expect(result.response?.code).toBe('5.03');
      expect(result.response?.payload).toMatch(/did not acknowledge within 1000 ms/);
      expect(Number(result.response?.options.get('Max-Age')?.[0])).toBeGreaterThan(0);
    } finally {
      await slowGw.stop();
    }
  });
});

describe('upstream window', () => {
  it('keeps at most upstream.maxInflight publishes unacknowledged and answers 5.03 when the queue behind them is full', async () => {
    const narrowGw = await startTestGateway({
      upstream: { url: `mqtt://127.0.0.1:${slowLink.port}`, accessToken: 'gw', maxInflight: 1, maxQueuedPublishes: 1 },
      outbox: { enabled: false },
    });
    try {
      await eventually(() => narrowGw.gateway.upstream.connected, 5000, 'upstream connection');
      // Announce the device first, so each reading below is exactly one publish.
      expect((await coapClient(narrowGw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', '{"n":0}'])).response?.code).toBe('2.01');
      slowLink.delayMs = 800;
      // Requests arriving in the same turn of the event loop would share one publish: space them out.
      const results = await Promise.all(
        [1, 2, 3].map(async (n) => {
          await sleep(150 * (n - 1));
          return coapClient(narrowGw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', `{"n":${n}}`]);
        }),
      );
      const codes = results.map((r) => r.response?.code).sort();
      expect(codes).toEqual(['2.01', '2.01', '5.03']);
      expect(results.find((r) => r.response?.code === '5.03')?.response?.payload).toMatch(/publish queue is full/);
    } finally {
      await narrowGw.stop();
    }
  });
});

describe('garbage', () => {
  it('survives random and mutated datagrams, resets malformed CONs, and keeps serving', async () => {
    const device = await UdpDevice.open(gw.port);
    try {
      // A CON whose option runs past the end of the datagram: a format error answered with RST.
      const truncated = post('/api/v1/boiler-token-7/telemetry', '', { messageId: 0x1234 }).subarray(0, 12);
      device.send(truncated);
      const reset = await device.nextPacket();
      expect(reset?.reset).toBe(true);
      expect(reset?.messageId).toBe(0x1234);

      const valid = post('/api/v1/boiler-token-7/telemetry', '{"fuzz":1}');
      let seed = 12345;
      const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
      for (let i = 0; i < 3000; i++) {
        let datagram: Buffer;
        if (i % 2 === 0) {
          datagram = Buffer.from(Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256)));
        } else {
          datagram = Buffer.from(valid);
          for (let flips = 0; flips < 3; flips++) datagram[Math.floor(random() * datagram.length)] = Math.floor(random() * 256);
          // Keep the header's version bits so the datagram reaches the parser rather than the cheap filter.
          datagram[0] = (datagram[0]! & 0x3f) | 0x40;
        }
        device.send(datagram);
        if (i % 200 === 0) await sleep(5);
      }
      await sleep(500);
      const probe = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"after":"fuzz"}']);
      expect(probe.response?.code).toBe('2.01');
      // Whatever the mutations produced, every upstream message is one ThingsBoard accepts. (The JSON paths
      // themselves are fuzzed against a real process in fuzz.test.ts.)
      expect(gatewayApiViolations(tb.received)).toEqual([]);
      expect(gw.gateway.messageLayer.stats.malformed).toBeGreaterThan(0);
    } finally {
      device.close();
    }
  });
});
