import mqtt, { type MqttClient } from 'mqtt';
import { eventually } from './ports.js';

export interface Received {
  readonly topic: string;
  readonly text: string;
  readonly json: unknown;
}

/**
 * Stands in for ThingsBoard: only subscribes to and publishes on the broker. Records every gateway-API
 * message in arrival order.
 */
export class ThingsBoardDouble {
  readonly received: Received[] = [];

  private constructor(private readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      const text = payload.toString();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      this.received.push({ topic, text, json });
    });
  }

  /**
   * Answers `v1/gateway/attributes/request` as ThingsBoard does (gateway-mqtt-api.md §5): one key → bare
   * `value`, several → `values`, unknown keys left out, nothing found → neither. `attributes` is per device.
   */
  answerAttributeRequests(attributes: Record<string, { client?: Record<string, unknown>; shared?: Record<string, unknown> }>): void {
    this.client.on('message', (topic, payload) => {
      if (topic !== 'v1/gateway/attributes/request' || this.silent) return;
      const request = JSON.parse(payload.toString()) as { id: number; device: string; client: boolean; key?: string; keys?: string[] };
      const scope = attributes[request.device]?.[request.client ? 'client' : 'shared'] ?? {};
      const answer: Record<string, unknown> = { id: request.id, device: request.device };
      if (request.key !== undefined) {
        if (Object.hasOwn(scope, request.key)) answer['value'] = scope[request.key];
      } else {
        const values = Object.fromEntries((request.keys ?? []).filter((k) => Object.hasOwn(scope, k)).map((k) => [k, scope[k]]));
        if (Object.keys(values).length > 0) answer['values'] = values;
      }
      void this.publish('v1/gateway/attributes/response', answer);
    });
  }

  /** Answers the gateway's own client-side RPCs with `reply(request)`. */
  answerOwnRpcs(reply: (request: { method: string; params: unknown }) => unknown): void {
    this.client.on('message', (topic, payload) => {
      const match = /^v1\/devices\/me\/rpc\/request\/(\d+)$/.exec(topic);
      if (!match || this.silent) return;
      void this.publish(`v1/devices/me/rpc/response/${match[1]}`, reply(JSON.parse(payload.toString()) as { method: string; params: unknown }));
    });
  }

  /** While true, requests are not answered (ThingsBoard sends nothing when it fails). */
  silent = false;

  async publish(topic: string, body: unknown): Promise<void> {
    await this.client.publishAsync(topic, typeof body === 'string' ? body : JSON.stringify(body), { qos: 1 });
  }

  static async connect(url: string): Promise<ThingsBoardDouble> {
    const client = await mqtt.connectAsync(url, { clientId: `tb-double-${process.pid}-${Math.random()}`, reconnectPeriod: 200 });
    await client.subscribeAsync(['v1/gateway/#', 'v1/devices/me/#'], { qos: 1 });
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

  clear(): void {
    this.received.length = 0;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
