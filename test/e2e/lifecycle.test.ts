// Device lifecycle upstream: idle devices are disconnected, observing ones kept alive.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

let broker: Mosquitto;
let gw: TestGateway;
let tb: ThingsBoardDouble;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerAttributeRequests({});
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    sessions: { idleTimeoutMs: 1000, keepAliveIntervalMs: 1000 },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

describe('device lifecycle upstream', () => {
  it('disconnects an idle device but keeps an observing one connected, with keep-alives', async () => {
    const observer = spawnCoapClient(gw.uri('/api/v1/boiler-token-7/rpc'), ['-s', '30']);
    try {
      await observer.waitForResponses(1);
      const posted = await coapClient(gw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', '{"t":1}']);
      expect(posted.response?.code).toBe('2.01');
      const [disconnect] = await tb.waitFor('v1/gateway/disconnect', 1, 5000);
      expect(disconnect!.json).toEqual({ device: 'Pump-2' });

      // The observer's device stays: no disconnect for it, and keep-alives on its behalf.
      const keepAlives = await tb.waitFor('v1/gateway/attributes/request', 1, 5000);
      expect(keepAlives[0]!.json).toMatchObject({ device: 'Boiler-7', client: false });
      await sleep(1500);
      expect(tb.on('v1/gateway/disconnect').map((m) => m.json)).toEqual([{ device: 'Pump-2' }]);

      // A disconnected device that comes back is announced again before its data.
      tb.clear();
      await coapClient(gw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', '{"t":2}']);
      await tb.waitFor('v1/gateway/telemetry');
      const topics = tb.received.map((m) => m.topic);
      expect(topics.indexOf('v1/gateway/connect')).toBeLessThan(topics.indexOf('v1/gateway/telemetry'));
    } finally {
      await observer.stop();
    }
  });
});
