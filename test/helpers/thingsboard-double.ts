import mqtt, { type MqttClient } from 'mqtt';
import { eventually } from './ports.js';

export interface Received {
  readonly topic: string;
  readonly text: string;
  readonly json: unknown;
  /** The payload as it arrived (to check it is valid UTF-8, which `text` cannot show). */
  readonly bytes: Buffer;
  /** When it arrived (Date.now()), to check rates. */
  readonly at: number;
}

const TOPICS = ['v1/gateway/#', 'v1/devices/me/#'];

/** A ThingsBoard's attributes, per device name and scope. */
export type AttributeStore = Record<string, { client?: Record<string, unknown>; shared?: Record<string, unknown> }>;

/** What a ThingsBoard with roomy tenant limits answers to getSessionLimits (docs/thingsboard.md). */
export const GENEROUS_SESSION_LIMITS = {
  maxPayloadSize: 65536,
  maxInflightMessages: 1000,
  rateLimits: { messages: '100000:1', telemetryMessages: '100000:1', telemetryDataPoints: '100000:1' },
  gatewayRateLimits: { messages: '100000:1', telemetryMessages: '100000:1', telemetryDataPoints: '100000:1' },
};

/**
 * Stands in for ThingsBoard: only subscribes to and publishes on the broker. Records every gateway-API
 * message in arrival order.
 */
export class ThingsBoardDouble {
  readonly received: Received[] = [];
  /** The store answerAttributeRequests answers from, once given. */
  private attributes: AttributeStore | undefined;

  private generation = 1;
  private subscribedGeneration = 1;

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      const text = payload.toString();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      this.received.push({ topic, text, json, bytes: Buffer.from(payload), at: Date.now() });
    });
    // While a test keeps the broker down, reconnect attempts fail with ECONNREFUSED: expected, not an error.
    client.on('error', () => {});
    // After a broker restart (a fresh broker keeps no sessions) subscribe again and note when it took.
    client.on('connect', () => {
      const generation = ++this.generation;
      client.subscribe(TOPICS, { qos: 1 }, (error) => {
        if (!error && generation === this.generation) this.subscribedGeneration = generation;
      });
    });
  }

  /** Resolves once the double is connected and subscribed on its current connection (after a broker restart). */
  subscribed(timeoutMs = 10_000): Promise<true> {
    return eventually(() => this.client.connected && this.subscribedGeneration === this.generation, timeoutMs, 'the ThingsBoard double to subscribe again');
  }

  /** Answers the gateway's getSessionLimits request (and only that) with `limits`. */
  answerSessionLimits(limits: unknown = GENEROUS_SESSION_LIMITS): void {
    this.client.on('message', (topic, payload) => {
      const match = /^v1\/devices\/me\/rpc\/request\/(\d+)$/.exec(topic);
      if (!match || this.silent) return;
      let method: unknown;
      try {
        method = (JSON.parse(payload.toString()) as { method?: unknown }).method;
      } catch {
        return;
      }
      if (method === 'getSessionLimits') void this.publish(`v1/devices/me/rpc/response/${match[1]}`, limits);
    });
  }

  /**
   * Answers `v1/gateway/attributes/request` as ThingsBoard does (docs/thingsboard.md): one key → bare
   * `value`, several → `values`, unknown keys left out, nothing found → neither; `keys: []` → every client
   * and shared attribute mixed in one `values`, scope lost. `attributes` is per device, and stays the
   * double's store: pushShared changes it.
   */
  answerAttributeRequests(attributes: AttributeStore): void {
    this.attributes = attributes;
    this.client.on('message', (topic, payload) => {
      if (topic !== 'v1/gateway/attributes/request' || this.silent) return;
      const request = JSON.parse(payload.toString()) as { id: number; device: string; client: boolean; key?: string; keys?: string[] };
      const stored = attributes[request.device];
      const all = request.keys?.length === 0;
      const scope = all ? { ...stored?.client, ...stored?.shared } : (stored?.[request.client ? 'client' : 'shared'] ?? {});
      const answer: Record<string, unknown> = { id: request.id, device: request.device };
      if (request.key !== undefined) {
        if (Object.hasOwn(scope, request.key)) answer['value'] = scope[request.key];
      } else {
        const keys = all ? Object.keys(scope) : (request.keys ?? []);
        const values = Object.fromEntries(keys.filter((k) => Object.hasOwn(scope, k)).map((k) => [k, scope[k]]));
        if (Object.keys(values).length > 0) answer['values'] = values;
      }
      void this.publish('v1/gateway/attributes/response', answer);
    });
  }

  /** ThingsBoard's shared attributes of `device` change: its store follows, and the push goes out on `v1/gateway/attributes`. */
  async pushShared(device: string, data: Record<string, unknown> & { deleted?: string[] }): Promise<void> {
    if (this.attributes) {
      const { deleted = [], ...changed } = data;
      const entry = (this.attributes[device] ??= {});
      const shared = { ...entry.shared, ...changed };
      for (const key of deleted) delete shared[key];
      entry.shared = shared;
    }
    await this.publish('v1/gateway/attributes', { device, data });
  }

  /** Answers the gateway's own client-side RPCs with `reply(request)`. */
  answerOwnRpcs(reply: (request: { method: string; params: unknown }) => unknown): void {
    this.client.on('message', (topic, payload) => {
      const match = /^v1\/devices\/me\/rpc\/request\/(\d+)$/.exec(topic);
      if (!match || this.silent) return;
      void this.publish(`v1/devices/me/rpc/response/${match[1]}`, reply(JSON.parse(payload.toString()) as { method: string; params: unknown }));
    });
  }

  /**
   * Answers device provisioning (docs/thingsboard.md): each request on /provision/request gets
   * `answer(request)` on /provision/response. A real ThingsBoard answers on the asking connection only;
   * on a plain broker every provisioning client hears every answer, so tests provision one at a time.
   */
  async answerProvisioning(answer: (request: Record<string, unknown>) => unknown): Promise<void> {
    this.client.on('message', (topic, payload) => {
      if (topic !== '/provision/request' || this.silent) return;
      void this.publish('/provision/response', answer(JSON.parse(payload.toString()) as Record<string, unknown>));
    });
    await this.client.subscribeAsync('/provision/request', { qos: 1 });
  }

  /** While true, requests are not answered (ThingsBoard sends nothing when it fails). */
  silent = false;

  async publish(topic: string, body: unknown): Promise<void> {
    await this.client.publishAsync(topic, typeof body === 'string' ? body : JSON.stringify(body), { qos: 1 });
  }

  /** Exactly these bytes, which need not be JSON or even UTF-8. */
  async publishRaw(topic: string, payload: Buffer): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1 });
  }

  static async connect(url: string): Promise<ThingsBoardDouble> {
    const client = await mqtt.connectAsync(url, { clientId: `tb-double-${process.pid}-${Math.random()}`, reconnectPeriod: 200 });
    await client.subscribeAsync(TOPICS, { qos: 1 });
    return new ThingsBoardDouble(client);
  }

  on(topic: string): Received[] {
    return this.received.filter((message) => message.topic === topic);
  }

  waitFor(topic: string, count = 1, timeoutMs = 5000): Promise<Received[]> {
    return eventually(() => {
      const messages = this.on(topic);
      return messages.length >= count ? messages : undefined;
    }, timeoutMs, `${count} message(s) on ${topic}`);
  }

  /** Every reading published for `device` on v1/gateway/telemetry, in arrival order, however they were batched. */
  readings(device: string): unknown[] {
    return this.on('v1/gateway/telemetry').flatMap((message) => (message.json as Record<string, unknown[]> | undefined)?.[device] ?? []);
  }

  waitForReadings(device: string, count: number, timeoutMs = 5000): Promise<unknown[]> {
    return eventually(() => {
      const readings = this.readings(device);
      return readings.length >= count ? readings : undefined;
    }, timeoutMs, `${count} reading(s) of ${device} on v1/gateway/telemetry`);
  }

  clear(): void {
    this.received.length = 0;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
