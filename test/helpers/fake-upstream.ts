// A stand-in for UpstreamConnection in unit tests of the outbox and the spilling uplink: it records
// publishes, and the test acknowledges or fails each one. The real broker paths are in test/e2e.
import type { OutboxUpstream } from '../../src/outbox/outbox.js';
import type { SpillUpstream } from '../../src/outbox/spilling-uplink.js';
import type { PublishOptions } from '../../src/upstream/connection.js';

export interface SentPublish {
  readonly topic: string;
  readonly payload: string;
  readonly options: PublishOptions;
  /** Acknowledged or failed already. */
  settled: boolean;
  ack(): void;
  fail(): void;
}

export class FakeUpstream implements OutboxUpstream, SpillUpstream {
  inflightLimit = 8;
  maxMessageBytes = 65536;
  maxPointsPerPublish = Infinity;
  readonly sent: SentPublish[] = [];
  private readonly listeners: Array<() => void> = [];

  constructor(public ready = false) {}

  get outstanding(): number {
    return this.sent.filter((publish) => !publish.settled).length;
  }

  onReady(listener: () => void): void {
    this.listeners.push(listener);
  }

  becomeReady(): void {
    this.ready = true;
    for (const listener of this.listeners) listener();
  }

  publish(topic: string, payload: string, options: PublishOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const publish: SentPublish = {
        topic,
        payload,
        options,
        settled: false,
        ack: () => {
          publish.settled = true;
          resolve();
        },
        fail: () => {
          publish.settled = true;
          reject(new Error('connection lost'));
        },
      };
      this.sent.push(publish);
    });
  }

  /** Every telemetry value per device, in publish order. */
  values(): Record<string, unknown[]> {
    const out: Record<string, unknown[]> = {};
    for (const { topic, payload } of this.sent) {
      if (topic !== 'v1/gateway/telemetry') continue;
      for (const [device, records] of Object.entries(JSON.parse(payload) as Record<string, Array<{ values: unknown }>>)) {
        (out[device] ??= []).push(...records.map((r) => r.values));
      }
    }
    return out;
  }
}
