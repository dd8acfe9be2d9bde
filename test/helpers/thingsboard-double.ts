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
