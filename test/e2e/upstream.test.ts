// A dead, dying and returning broker. With the outbox, devices keep being answered 2.01 and their readings
// wait on disk, then go up in order; without it, devices are told the truth (5.03 with Max-Age). Either way
// nothing a device was told was accepted is lost, and after a reconnect every active device is announced
// again before its data.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

async function gatewayFor(url: string, config: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startTestGateway({ upstream: { url, accessToken: 'gw', reconnectMinMs: 1500, reconnectMaxMs: 3000 }, ...config });
  cleanups.push(() => gw.stop());
  return gw;
}

const DIRECT = { outbox: { enabled: false } };

type Telemetry = Record<string, Array<{ ts: number; values: Record<string, unknown> }>>;
/** Every telemetry value of `device` the double received, in arrival order. */
const valuesOf = (tb: ThingsBoardDouble, device: string): Array<Record<string, unknown>> =>
  tb.on('v1/gateway/telemetry').flatMap((m) => ((m.json as Telemetry)[device] ?? []).map((r) => r.values));

describe('with the outbox: broker unavailable', () => {
  it('answers 2.01 while no broker listens, keeps the readings across a restart, and delivers them in order once one does', async () => {
    const port = await freeTcpPort();
    const stateDir = mkdtempSync(join(tmpdir(), 'coap2mqtt-outbox-'));
    cleanups.push(async () => rmSync(stateDir, { recursive: true, force: true }));
    const first = await startTestGateway({ upstream: { url: `mqtt://127.0.0.1:${port}`, accessToken: 'gw' }, state: { dir: stateDir } });
    for (let n = 1; n <= 5; n++) {
      const token = n % 2 === 0 ? 'pump-token-2' : 'boiler-token-7';
      const result = await coapClient(first.uri(`/api/v1/${token}/telemetry`), ['-m', 'post', '-e', `{"n":${n}}`]);
      expect(result.response?.code).toBe('2.01');
    }
    expect(first.gateway.outbox!.stats()).toMatchObject({ records: 5, accepted: 5, delivered: 0 });
    await first.stop();

    const broker = await Mosquitto.start(port);
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    const second = await gatewayFor(`mqtt://127.0.0.1:${port}`, { state: { dir: stateDir } });
    await eventually(() => valuesOf(tb, 'Boiler-7').length + valuesOf(tb, 'Pump-2').length === 5, 8000, 'the stored readings upstream');
    expect(valuesOf(tb, 'Boiler-7')).toEqual([{ n: 1 }, { n: 3 }, { n: 5 }]);
    expect(valuesOf(tb, 'Pump-2')).toEqual([{ n: 2 }, { n: 4 }]);
    // Each device is announced before its first data on the session.
    const topics = tb.received.map((m) => `${m.topic} ${m.text}`);
    for (const device of ['Boiler-7', 'Pump-2']) {
      const connect = topics.findIndex((t) => t.startsWith('v1/gateway/connect') && t.includes(`"${device}"`));
      const data = topics.findIndex((t) => t.startsWith('v1/gateway/telemetry') && t.includes(`"${device}"`));
      expect(connect).toBeGreaterThanOrEqual(0);
      expect(connect).toBeLessThan(data);
    }
    await eventually(() => second.gateway.outbox!.stats().records === 0, 5000, 'the outbox to empty after the PUBACKs');
    expect(second.logs.some((line) => line.component === 'outbox' && /readings from before/.test(String(line.msg)))).toBe(true);
  });

  it('keeps accepting through a broker crash and sends what came meanwhile after re-announcing the devices', async () => {
    const broker = await Mosquitto.start();
    cleanups.push(() => broker.dispose());
    const tb = await ThingsBoardDouble.connect(broker.url);
    cleanups.push(() => tb.close());
    const gw = await gatewayFor(broker.url);
    await eventually(() => gw.gateway.upstream.connected, 5000, 'connection');
    expect((await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"n":1}'])).response?.code).toBe('2.01');
    await eventually(() => valuesOf(tb, 'Boiler-7').length === 1, 5000, 'the first reading');

    await broker.stop();
    await eventually(() => !gw.gateway.upstream.connected, 5000, 'disconnect to be noticed');
    tb.clear();
    for (const n of [2, 3, 4]) {
      const during = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', `{"n":${n}}`]);
      expect(during.response?.code).toBe('2.01');
    }
    expect(gw.gateway.outbox!.stats().records).toBe(3);

    await broker.start();
    await tb.subscribed();
    await eventually(() => valuesOf(tb, 'Boiler-7').length === 3, 10_000, 'the spooled readings');
    expect(valuesOf(tb, 'Boiler-7')).toEqual([{ n: 2 }, { n: 3 }, { n: 4 }]);
    const connect = tb.received.findIndex((m) => m.topic === 'v1/gateway/connect');
    const data = tb.received.findIndex((m) => m.topic === 'v1/gateway/telemetry');
    expect(connect).toBeGreaterThanOrEqual(0);
    expect(connect).toBeLessThan(data);
  });
});

describe('without the outbox: broker unavailable', () => {
  it('answers 5.03 with Max-Age while no broker listens, and starts delivering once one does', async () => {
    const port = await freeTcpPort();
    const gw = await gatewayFor(`mqtt://127.0.0.1:${port}`, DIRECT);
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
    const gw = await gatewayFor(broker.url, DIRECT);
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
