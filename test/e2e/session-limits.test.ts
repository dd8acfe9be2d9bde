// ThingsBoard closes the gateway's session when it exceeds a rate limit, so the gateway asks for them after
// connecting and keeps under 80%: here the ThingsBoard double announces small ones and watches the rate.
import { afterEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeTcpPort } from '../helpers/ports.js';
import { GatedTcpProxy } from '../helpers/proxies.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';
import { UdpDevice, post } from '../helpers/udp-device.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('ThingsBoard session limits', () => {
  it('drains a backlog under 80% of the announced message rate, window and payload size', async () => {
    const port = await freeTcpPort();
    // Shut until the double listens: a gateway reconnecting the moment the broker starts would otherwise ask
    // for the limits before anyone is subscribed to answer, and go ahead without them after 3 s.
    const gate = await GatedTcpProxy.start(port, { open: false });
    cleanups.push(() => gate.close());
    const gw = await startTestGateway({
      upstream: { url: gate.url, accessToken: 'gw', sessionLimitsTimeoutMs: 3000, reconnectMinMs: 300, reconnectMaxMs: 600 },
      limits: { deviceRequestsPerSecond: 0 },
    });
    cleanups.push(() => gw.stop());
    // A backlog while no broker listens: 40 readings of ~60 bytes.
    const device = await UdpDevice.open(gw.port);
    cleanups.push(async () => device.close());
    for (let n = 0; n < 40; n++) {
      device.send(post('/api/v1/boiler-token-7/telemetry', `{"n":${n},"pad":"${'x'.repeat(20)}"}`, { messageId: n + 1 }));
      expect((await device.nextPacket())?.code).toBe('2.01');
    }

    const broker = await Mosquitto.start(port);
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    // 10 messages per second, 300-byte payloads: at most 8 per second, each carrying a few readings.
    tb.answerSessionLimits({ maxPayloadSize: 300, maxInflightMessages: 5, gatewayRateLimits: { messages: '10:1' } });
    await tb.subscribed();
    gate.open();

    await eventually(() => gw.gateway.outbox!.stats().records === 0, 15_000, 'the backlog to drain');
    const telemetry = tb.on('v1/gateway/telemetry');
    for (const message of telemetry) expect(message.bytes.length).toBeLessThanOrEqual(300);
    const readings = telemetry.flatMap((m) => (m.json as Record<string, Array<{ values: { n: number } }>>)['Boiler-7']!.map((r) => r.values.n));
    expect(readings).toEqual(Array.from({ length: 40 }, (_, n) => n));
    // Every message counts (connect and the session-limits request too): with a bucket of 8 refilled at 8/s,
    // by t seconds after the first no more than 8 + 8t can have gone.
    const sent = tb.received.filter((m) => m.topic.startsWith('v1/gateway/')).length;
    expect(sent).toBeGreaterThan(8);
    const arrivals = tb.received.filter((m) => m.topic.startsWith('v1/gateway/')).map((m) => m.at);
    const start = arrivals[0]!;
    arrivals.forEach((at, i) => expect(i + 1).toBeLessThanOrEqual(8 + Math.ceil((8 * (at - start)) / 1000) + 1));
    expect(gw.logs.some((line) => /session limits received/.test(String(line.msg)))).toBe(true);
  });

  it('goes ahead with the configured limits when nobody answers getSessionLimits', async () => {
    const broker = await Mosquitto.start();
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    const gw = await startTestGateway({ upstream: { url: broker.url, accessToken: 'gw', sessionLimitsTimeoutMs: 500 } });
    cleanups.push(() => gw.stop());
    const result = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"t":1}']);
    expect(result.response?.code).toBe('2.01');
    await tb.waitFor('v1/gateway/telemetry', 1, 5000);
    expect(gw.logs.filter((line) => /no usable answer to getSessionLimits/.test(String(line.msg)))).toHaveLength(1);
  });
});
