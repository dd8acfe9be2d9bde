// A device's own accepted telemetry, told back to its subscription: thethings.io's subscribe notifies a
// thing of each of its writes ("each time a Write is sent you get" its values). One subscriber per device,
// a newer one replacing the older. A slow subscriber holds one delivery in flight plus the latest write
// waiting behind it (as Observe keeps only the newest state, RFC 7641 §4.5.2), so memory stays bounded by
// one write (the payload limit) per device however fast it writes.
import type { Logger } from 'pino';
import type { Device, JsonValue, Subscriber, TelemetryRecord } from '../model.js';
import type { Subscription } from './subscription.js';

/** One value of a write, at the time of its record (the device's datetime, or when the gateway got it). */
export interface WrittenValue {
  readonly key: string;
  readonly value: JsonValue;
  readonly ts: number;
}

export type WriteSubscriber = Subscriber<readonly WrittenValue[]>;

/** One subscriber's deliveries: one in flight, the latest write waiting. */
class Delivery {
  private inFlight = false;
  private waiting: readonly WrittenValue[] | undefined;
  ended = false;

  constructor(readonly subscriber: WriteSubscriber) {}

  /** Returns whether an earlier waiting write was superseded. */
  offer(values: readonly WrittenValue[]): boolean {
    if (!this.inFlight) {
      this.send(values);
      return false;
    }
    const superseded = this.waiting !== undefined;
    this.waiting = values;
    return superseded;
  }

  private send(values: readonly WrittenValue[]): void {
    this.inFlight = true;
    void this.subscriber.deliver(values).then(() => {
      this.inFlight = false;
      const next = this.waiting;
      this.waiting = undefined;
      if (next && !this.ended) this.send(next);
    });
  }
}

export class OwnWrites {
  private readonly deliveries = new Map<string, Delivery>();

  constructor(private readonly log: Logger) {}

  subscribe(device: Device, subscriber: WriteSubscriber): Subscription {
    const delivery = new Delivery(subscriber);
    const previous = this.deliveries.get(device.name);
    this.deliveries.set(device.name, delivery);
    if (previous) {
      previous.ended = true;
      previous.subscriber.replaced();
    }
    return {
      end: () => {
        delivery.ended = true;
        if (this.deliveries.get(device.name) === delivery) this.deliveries.delete(device.name);
      },
    };
  }

  /** Telemetry of the device was accepted: its subscriber, if any, hears the values. */
  written(deviceName: string, records: readonly TelemetryRecord[]): void {
    const delivery = this.deliveries.get(deviceName);
    if (!delivery) return;
    const values = records.flatMap(({ ts, values: record }) => Object.entries(record).map(([key, value]): WrittenValue => ({ key, value, ts })));
    if (delivery.offer(values)) this.log.debug({ device: deviceName }, 'own-write notification superseded by a newer write (the observer is slow)');
  }

  /** A reload removed the devices or changed their credentials. */
  revoke(names: readonly string[]): void {
    for (const name of names) {
      const delivery = this.deliveries.get(name);
      if (!delivery) continue;
      this.deliveries.delete(name);
      delivery.ended = true;
      delivery.subscriber.revoked();
    }
  }
}
