// Delivery of an MQTT device's QoS 1 PUBLISHes (docs/device-api-mqtt.md, "Delivery"): the PUBACK means
// what 2.01 means over CoAP (acknowledged by the broker, or stored in the outbox), PUBACKs follow the
// order of the PUBLISHes, a broker outage loses nothing, and the per-device rate limit paces a fast
// device instead of dropping its messages or closing its connection. MQTT.js is the device; a real
// mosquitto behind a gate (a TCP relay that can hold PUBACKs back or cut the link) is ThingsBoard's broker.
import { describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { MqttJsDevice, settlesWithin } from '../helpers/mqtt-js-device.js';
import { eventually, sleep } from '../helpers/ports.js';
import { GatedTcpProxy } from '../helpers/proxies.js';
import { upstreamRig } from '../helpers/upstream-rig.js';

const TOKEN = 'boiler-token-7';
const DEVICE = 'Boiler-7';
const TELEMETRY = 'v1/devices/me/telemetry';

let gate: GatedTcpProxy;
const upstream = upstreamRig();

/** A gateway whose upstream goes through a fresh gate, with the MQTT device listener on a free port. */
async function gateway(extra: Record<string, Record<string, unknown>> = {}): Promise<TestGateway & { url: string }> {
  gate = await GatedTcpProxy.start(upstream.broker.port);
  upstream.cleanups.push(() => gate.close());
  const gw = await startTestGateway({
    ...extra,
    upstream: { url: gate.url, accessToken: 'gw', reconnectMinMs: 200, reconnectMaxMs: 500, ...extra.upstream },
    limits: { deviceRequestsPerSecond: 0, ...extra.limits },
    mqttDevices: { enabled: true, host: '127.0.0.1', port: 0, ...extra.mqttDevices },
  });
  upstream.cleanups.push(() => gw.stop());
  await gw.upstreamConnected();
  return { ...gw, url: `mqtt://127.0.0.1:${gw.gateway.mqttAddresses!.plain.port}` };
}

async function device(url: string): Promise<MqttJsDevice> {
  const connected = await MqttJsDevice.connect(url, { username: TOKEN, clientId: 'boiler-7' });
  upstream.cleanups.push(() => connected.close());
  return connected;
}

/** The n of each reading of the device upstream, in arrival order. */
const ns = (): number[] => upstream.tb.readings(DEVICE).map((reading) => (reading as { values: { n: number } }).values.n);

async function metric(gw: TestGateway, series: RegExp): Promise<number> {
  const { port } = gw.gateway.httpAddress!;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(series.exec(text)?.[1] ?? NaN);
}

describe('QoS 1: PUBACK once the reading is safe', () => {
  it('outbox off: no PUBACK while the broker holds its own back; the PUBACK follows the broker\'s', async () => {
    const gw = await gateway({ outbox: { enabled: false } });
    const boiler = await device(gw.url);
    gate.delayMs = 1500;
    const acked = boiler.publish(TELEMETRY, '{"n":1}');
    expect(await settlesWithin(acked, 1000), 'PUBACK before the broker acknowledged').toBe(false);
    // The broker has the reading already: only its PUBACK is on its way.
    await upstream.tb.waitForReadings(DEVICE, 1);
    expect(await settlesWithin(acked, 3000), 'PUBACK once the broker acknowledged').toBe(true);
    expect(ns()).toEqual([1]);
  });

  it('outbox off: no PUBACK while the broker is unreachable; the message is held and PUBACKed once it is back', async () => {
    const gw = await gateway({ outbox: { enabled: false } });
    const boiler = await device(gw.url);
    gate.shut();
    await eventually(() => !gw.gateway.upstream.connected, 3000, 'the gateway noticing the cut');
    const acked = boiler.publish(TELEMETRY, '{"n":2}');
    expect(await settlesWithin(acked, 2000), 'PUBACK while the broker is away').toBe(false);
    expect(ns()).toEqual([]);
    gate.open();
    expect(await settlesWithin(acked, 5000), 'PUBACK once the broker is back').toBe(true);
    await upstream.tb.waitForReadings(DEVICE, 1);
    await sleep(300);
    expect(ns()).toEqual([2]);
    // Held and tried again, never dropped; the connection stayed up.
    expect(await metric(gw, /^coap2mqtt_mqtt_device_publishes_total\{outcome="retried"\} (\S+)$/m)).toBeGreaterThan(0);
    expect(boiler.open).toBe(true);
  });

  it('outbox on: PUBACK at once while the broker is unreachable (stored), and the reading arrives once it is back', async () => {
    const gw = await gateway();
    const boiler = await device(gw.url);
    gate.shut();
    await eventually(() => !gw.gateway.upstream.connected, 3000, 'the gateway noticing the cut');
    const acked = boiler.publish(TELEMETRY, '{"n":3}');
    expect(await settlesWithin(acked, 1000), 'PUBACK of a stored reading').toBe(true);
    expect(gw.gateway.outbox!.stats().records).toBe(1);
    await sleep(300);
    expect(ns()).toEqual([]);
    gate.open();
    await upstream.tb.waitForReadings(DEVICE, 1);
    await sleep(300);
    expect(ns()).toEqual([3]);
  });

  it('PUBACKs leave in the order the PUBLISHes came, whatever each waits for', async () => {
    const gw = await gateway({ outbox: { enabled: false } });
    const boiler = await device(gw.url);
    // Telemetry waits for the broker's PUBACK (600 ms here); a question or a topic outside the API is
    // acknowledged on arrival, yet its PUBACK must not overtake the telemetry before it.
    gate.delayMs = 600;
    const sentAt = Date.now();
    const all = [
      boiler.publish(TELEMETRY, '{"n":10}'),
      boiler.publish('v1/devices/me/not-in-the-api', '{}'),
      boiler.publish('v1/devices/me/attributes/request/1', '{"clientKeys":"a"}'),
      boiler.publish(TELEMETRY, '{"n":11}'),
      boiler.publish('v1/devices/me/attributes', '{"firmware":"1.2"}'),
      boiler.publish(TELEMETRY, '{"n":12}'),
    ];
    await Promise.all(all);
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(550);
    expect(boiler.publishIds()).toHaveLength(6);
    expect(boiler.pubackIds()).toEqual(boiler.publishIds());
    expect(ns()).toEqual([10, 11, 12]);
  });
});

describe('best effort and no room', () => {
  const qos0 = (boiler: MqttJsDevice, n: number): Promise<unknown> => boiler.client.publishAsync(TELEMETRY, JSON.stringify({ n }), { qos: 0 });

  it('QoS 0 while the broker is unreachable: stored with the outbox on, dropped with it off; the connection stays', async () => {
    for (const outbox of [true, false]) {
      const gw = await gateway({ outbox: { enabled: outbox } });
      const boiler = await device(gw.url);
      gate.shut();
      await eventually(() => !gw.gateway.upstream.connected, 3000, 'the gateway noticing the cut');
      await qos0(boiler, outbox ? 20 : 21);
      await sleep(500);
      gate.open();
      await gw.upstreamConnected();
      await boiler.publish(TELEMETRY, JSON.stringify({ n: outbox ? 30 : 31 }));
      await sleep(500);
      expect(ns(), `outbox ${outbox ? 'on' : 'off'}`).toEqual(outbox ? [20, 30] : [31]);
      expect(boiler.open).toBe(true);
      upstream.tb.clear();
    }
  });

  it('no room in the outbox and the broker unreachable: QoS 1 is held without PUBACK and not dropped, QoS 0 is dropped', async () => {
    // More free disk asked for than any test machine has: the outbox refuses to store anything.
    const gw = await gateway({ outbox: { minFreeDiskBytes: 1_099_511_627_776 } });
    const boiler = await device(gw.url);
    gate.shut();
    await eventually(() => !gw.gateway.upstream.connected, 3000, 'the gateway noticing the cut');
    await qos0(boiler, 40);
    const held = boiler.publish(TELEMETRY, '{"n":41}');
    expect(await settlesWithin(held, 2000), 'PUBACK with nowhere to keep the reading').toBe(false);
    expect(boiler.open).toBe(true);
    expect(await metric(gw, /^coap2mqtt_mqtt_device_publishes_total\{outcome="dropped"\} (\S+)$/m)).toBe(1);
    expect(await metric(gw, /^coap2mqtt_mqtt_device_publishes_total\{outcome="retried"\} (\S+)$/m)).toBeGreaterThan(0);
    // Tried again after the Max-Age a CoAP device would be told (30 s for storage): not waited for here.
  });
});

/**
 * Sends readings n = from..to-1 at QoS 1 with `window` in flight at once (as MQTT.js does unbounded, and
 * firmware with a small in-flight window does), `paceMs` between sends; resolves once every one is PUBACKed.
 */
async function stream(boiler: MqttJsDevice, from: number, to: number, window: number, paceMs: number, onAck?: (acked: number) => void): Promise<void> {
  let next = from;
  let acked = 0;
  const lane = async (): Promise<void> => {
    while (next < to) {
      const n = next++;
      await boiler.publish(TELEMETRY, JSON.stringify({ n }));
      onAck?.(++acked);
      if (paceMs > 0) await sleep(paceMs);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
}

/** Every n in [0, count) arrived; returns the number of extra copies. */
function expectAllArrived(count: number): number {
  const seen = ns();
  const distinct = new Set(seen);
  const missing = Array.from({ length: count }, (_, n) => n).filter((n) => !distinct.has(n));
  expect(missing, 'PUBACKed readings that never arrived upstream').toEqual([]);
  expect(distinct.size).toBe(count);
  return seen.length - distinct.size;
}

describe('a broker outage while a device streams at QoS 1', () => {
  it.each([
    { outbox: true, what: 'stored and PUBACKed meanwhile' },
    { outbox: false, what: 'outbox off: held without PUBACK meanwhile' },
  ])('loses nothing and duplicates no more than the messages in flight at the cut ($what)', async ({ outbox }) => {
    const maxInflight = 8;
    const gw = await gateway({ outbox: { enabled: outbox }, upstream: { maxInflight } });
    const boiler = await device(gw.url);
    const readings = 300;
    const window = 16;
    let cut: Promise<void> | undefined;
    let ackedAtCut = 0;
    let ackedAfterOutage = 0;
    let upstreamAtCut = 0;
    await stream(boiler, 0, readings, window, 5, (acked) => {
      if (acked !== 100) return;
      ackedAtCut = acked;
      upstreamAtCut = upstream.tb.received.length;
      cut = (async () => {
        gate.shut();
        await sleep(1500);
        ackedAfterOutage = boiler.pubackIds().length;
        gate.open();
      })();
    });
    await cut;
    expect(boiler.pubackIds()).toHaveLength(readings);
    await eventually(() => new Set(ns()).size === readings, 15_000, `all ${readings} readings upstream`);
    await sleep(500);
    const duplicates = expectAllArrived(readings);
    // QoS 1 allows a copy of what was in flight when the link was cut: the device's window (held messages
    // tried again) and the gateway's publishes awaiting the broker's PUBACK, each as big as those before.
    const records = Math.max(1, ...upstream.tb.received.slice(0, upstreamAtCut).map((m) => ((m.json as Record<string, unknown[]> | undefined)?.[DEVICE] ?? []).length));
    const bound = window + maxInflight * records;
    console.log(`[mqtt-delivery] outage (outbox ${outbox ? 'on' : 'off'}): ${ackedAfterOutage - ackedAtCut} PUBACKs during the outage, ${duplicates} duplicate(s) (bound ${bound})`);
    expect(duplicates).toBeLessThanOrEqual(bound);
    if (outbox) expect(ackedAfterOutage - ackedAtCut, 'PUBACKs while the broker was away (stored)').toBeGreaterThan(50);
    else expect(ackedAfterOutage - ackedAtCut, 'PUBACKs while the broker was away').toBeLessThanOrEqual(window);
    expect(boiler.open).toBe(true);
    expect(gatewayApiViolations(upstream.tb.received)).toEqual([]);
  });
});

describe('limits.deviceRequestsPerSecond', () => {
  it('paces a device publishing fast at QoS 1: nothing lost, nothing closed, the messages arrive spread over time', async () => {
    const perSecond = 5;
    const gw = await gateway({ limits: { deviceRequestsPerSecond: perSecond, deviceBurst: perSecond } });
    const boiler = await device(gw.url);
    const readings = 20;
    const sentAt = Date.now();
    await Promise.all(Array.from({ length: readings }, (_, n) => boiler.publish(TELEMETRY, JSON.stringify({ n }))));
    const tookMs = Date.now() - sentAt;
    await upstream.tb.waitForReadings(DEVICE, readings);
    await sleep(300);
    expect(expectAllArrived(readings)).toBe(0);
    expect(boiler.pubackIds()).toEqual(boiler.publishIds());
    // A burst of 5, then 5 a second: 15 more take about 3 s (retries wait whole seconds, so a little more).
    const arrivals = upstream.tb.on('v1/gateway/telemetry').map((m) => m.at);
    const spreadMs = Math.max(...arrivals) - Math.min(...arrivals);
    console.log(`[mqtt-delivery] rate limit ${perSecond}/s: ${readings} PUBACKed in ${tookMs} ms, upstream over ${spreadMs} ms`);
    expect(tookMs).toBeGreaterThanOrEqual(((readings - perSecond) / perSecond - 1) * 1000);
    expect(spreadMs).toBeGreaterThanOrEqual(((readings - perSecond) / perSecond - 1) * 1000);
    expect(await metric(gw, /^coap2mqtt_mqtt_device_publishes_total\{outcome="retried"\} (\S+)$/m)).toBeGreaterThan(0);
    expect(await metric(gw, /^coap2mqtt_mqtt_device_connections_closed_total\{reason="refused-publish"\} (\S+)$/m) || 0).toBe(0);
    expect(boiler.open).toBe(true);
  });
});
