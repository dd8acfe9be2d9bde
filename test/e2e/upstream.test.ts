// A dead, dying and returning broker: devices are told the truth (5.03 with Max-Age) and nothing they were
// told was accepted is lost; after a reconnect every active device is announced again before its data.
import { afterEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeTcpPort } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function gatewayFor(url: string, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startTestGateway({ upstream: { url, accessToken: 'gw', reconnectMinMs: 1500, reconnectMaxMs: 3000, ...extra } });
  cleanups.push(() => gw.stop());
  return gw;
}

describe('upstream broker unavailable', () => {
  it('answers 5.03 with Max-Age while no broker listens, and starts delivering once one does', async () => {
    const port = await freeTcpPort();
    const gw = await gatewayFor(`mqtt://127.0.0.1:${port}`);
    const refused = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"t":1}']);
    expect(refused.response?.code).toBe('5.03');
    expect(refused.response?.payload).toMatch(/not connected to ThingsBoard/);
    const maxAge = Number(refused.response?.options.get('Max-Age')?.[0]);
    expect(maxAge).toBeGreaterThanOrEqual(1);
    expect(maxAge).toBeLessThanOrEqual(4);

    // The technician sees why, once, not once per request or per attempt.
    const warnings = gw.logs.filter((line) => line.component === 'upstream' && line.level === 'warn');
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    expect(String(warnings[0]!.msg)).toMatch(/cannot connect to upstream broker: connection refused/);

    const broker = await Mosquitto.start(port);
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    await eventually(() => gw.gateway.upstream.connected, 8000, 'reconnection');
    const accepted = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"t":2}']);
    expect(accepted.response?.code).toBe('2.01');
    const [telemetry] = await tb.waitFor('v1/gateway/telemetry');
    expect((telemetry!.json as Record<string, Array<{ values: unknown }>>)['Boiler-7']![0]!.values).toEqual({ t: 2 });
  });

  it('survives a broker crash: 5.03 while it is down, re-announces active devices when it is back', async () => {
    const broker = await Mosquitto.start();
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    const gw = await gatewayFor(broker.url);
    await eventually(() => gw.gateway.upstream.connected, 5000, 'connection');

    for (const token of ['boiler-token-7', 'pump-token-2']) {
      const result = await coapClient(gw.uri(`/api/v1/${token}/telemetry`), ['-m', 'post', '-e', '{"before":1}']);
      expect(result.response?.code).toBe('2.01');
    }
    await tb.waitFor('v1/gateway/telemetry', 2);

    await broker.stop();
    await eventually(() => !gw.gateway.upstream.connected, 5000, 'disconnect to be noticed');
    tb.clear();
    const during = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"during":1}']);
    expect(during.response?.code).toBe('5.03');
    expect(gw.logs.some((line) => line.level === 'warn' && /connection lost/.test(String(line.msg)))).toBe(true);

    await broker.start();
    // The double reconnects within 200 ms; the gateway waits at least 1.2 s, so the double hears everything.
    const reannounced = await tb.waitFor('v1/gateway/connect', 2, 10_000);
    expect(reannounced.map((m) => (m.json as { device: string }).device).sort()).toEqual(['Boiler-7', 'Pump-2']);

    const after = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"after":1}']);
    expect(after.response?.code).toBe('2.01');
    const telemetry = await tb.waitFor('v1/gateway/telemetry');
    expect(telemetry.map((m) => JSON.stringify(m.json))).toEqual([expect.stringContaining('"after":1')]);
    // Nothing the device was told 5.03 about went upstream.
    expect(tb.received.some((m) => m.text.includes('"during"'))).toBe(false);
  });
});
