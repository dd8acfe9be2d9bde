// The PUBACK path's batching (bridge/deliver.ts) against a stand-in for the MQTT connection that the test
// acknowledges or fails publish by publish. The real broker paths are in test/e2e (uplink, reliability).
import { afterEach, describe, expect, it } from 'vitest';
import { createDirectUplink } from '../../src/bridge/deliver.js';
import { DevicePresence } from '../../src/bridge/presence.js';
import type { Upstream } from '../../src/bridge/upstream-port.js';
import { createLogger } from '../../src/log.js';
import type { Device, UplinkOutcome } from '../../src/model.js';
import { UpstreamUnavailableError, type PublishOptions } from '../../src/upstream/connection.js';
import { Topic, telemetryItems } from '../../src/upstream/gateway-api.js';

interface SentPublish {
  readonly topic: string;
  readonly payload: string;
  readonly options: PublishOptions | undefined;
  ack(): void;
  fail(): void;
}

class FakeUpstream implements Upstream {
  connected = true;
  maxMessageBytes = 65536;
  maxPointsPerPublish = Infinity;
  readonly sent: SentPublish[] = [];

  publish(topic: string, payload: string, options?: PublishOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      this.sent.push({ topic, payload, options, ack: resolve, fail: () => reject(new UpstreamUnavailableError('the upstream connection was lost', 3)) });
    });
  }

  onConnected(): void {}
  retryAfterSeconds(): number {
    return 3;
  }
  applySessionLimits(): void {}

  telemetry(): SentPublish[] {
    return this.sent.filter((publish) => publish.topic === Topic.telemetry);
  }
}

const devices: Device[] = ['Boiler-7', 'Pump-2', 'Fan-1'].map((name) => ({ name, type: 'default' }));
const reading = (device: Device, n: number, bytes = 0) =>
  telemetryItems(device.name, [{ ts: 1_700_000_000_000 + n, values: { n, ...(bytes > 0 && { pad: 'x'.repeat(bytes) }) } }], 65536);

/** Which of the promises have settled, without waiting for the others. */
async function settled(outcomes: Array<Promise<UplinkOutcome>>): Promise<Array<UplinkOutcome | 'pending'>> {
  const marker = Symbol('pending');
  return Promise.all(outcomes.map((outcome) => Promise.race([outcome, new Promise<symbol>((resolve) => setImmediate(() => resolve(marker)))]))).then(
    (results) => results.map((result) => (result === marker ? 'pending' : (result as UplinkOutcome))),
  );
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

let upstream: FakeUpstream;
let presence: DevicePresence;

function uplink() {
  upstream = new FakeUpstream();
  presence = new DevicePresence(upstream, { idleTimeoutMs: 0, keepAliveIntervalMs: 0 }, createLogger('silent'));
  return createDirectUplink(upstream, presence);
}

afterEach(() => presence?.stop());

describe('the direct (PUBACK) uplink', () => {
  it('sends the uplinks of one event-loop turn as one publish and answers each device only after its PUBACK', async () => {
    const direct = uplink();
    const outcomes = devices.map((device, i) => direct.send(device, reading(device, i)));
    await turn();
    const [telemetry] = upstream.telemetry();
    expect(upstream.telemetry()).toHaveLength(1);
    expect(Object.keys(JSON.parse(telemetry!.payload) as object)).toEqual(['Boiler-7', 'Pump-2', 'Fan-1']);
    expect(telemetry!.options?.dataPoints).toBe(3);
    // Every device was announced before its data.
    expect(upstream.sent.slice(0, 3).map((publish) => publish.topic)).toEqual([Topic.connect, Topic.connect, Topic.connect]);
    expect(await settled(outcomes)).toEqual(['pending', 'pending', 'pending']);
    telemetry!.ack();
    expect(await Promise.all(outcomes)).toEqual([{ status: 'accepted' }, { status: 'accepted' }, { status: 'accepted' }]);
  });

  it('answers a device whose items span several publishes only when all are acknowledged, and 5.03 if one fails', async () => {
    const direct = uplink();
    upstream.maxMessageBytes = 300;
    const [boiler, pump] = devices as [Device, Device];
    const big = direct.send(boiler, [...reading(boiler, 1, 150), ...reading(boiler, 2, 150)]);
    const small = direct.send(pump, reading(pump, 3));
    await turn();
    const telemetry = upstream.telemetry();
    expect(telemetry).toHaveLength(2); // Boiler's first reading alone, then its second with Pump's
    telemetry[1]!.ack();
    expect(await settled([big, small])).toEqual(['pending', { status: 'accepted' }]);
    telemetry[0]!.fail();
    expect(await big).toMatchObject({ status: 'unavailable', retryAfterSeconds: 3 });
  });

  it('refuses only the request that no longer fits after ThingsBoard lowered its limit', async () => {
    const direct = uplink();
    const [boiler, pump] = devices as [Device, Device];
    const bigItems = reading(boiler, 1, 500);
    upstream.maxMessageBytes = 300; // as after getSessionLimits announced a smaller maxPayloadSize
    const big = direct.send(boiler, bigItems);
    const small = direct.send(pump, reading(pump, 2));
    await turn();
    expect(await big).toMatchObject({ status: 'too-large' });
    const telemetry = upstream.telemetry();
    expect(telemetry).toHaveLength(1);
    expect(Object.keys(JSON.parse(telemetry[0]!.payload) as object)).toEqual(['Pump-2']);
    telemetry[0]!.ack();
    expect(await small).toEqual({ status: 'accepted' });
  });

  it('answers 5.03 at once, publishing nothing, while the broker is unreachable', async () => {
    const direct = uplink();
    upstream.connected = false;
    expect(await direct.send(devices[0]!, reading(devices[0]!, 1))).toMatchObject({ status: 'unavailable', retryAfterSeconds: 3 });
    await turn();
    expect(upstream.sent).toHaveLength(0);
  });
});
