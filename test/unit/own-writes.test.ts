// A device's own writes, told to its subscription: one subscriber per device, and a slow one holds no
// more than a notification in flight plus the latest write.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { OwnWrites, type WrittenValue } from '../../src/bridge/own-writes.js';
import type { DeliveryResult, Device, Subscriber } from '../../src/model.js';

const device = { name: 'Boiler-7' } as Device;

/** A subscriber whose deliveries finish when the test says so. */
function slowSubscriber() {
  const delivered: Array<readonly WrittenValue[]> = [];
  const finish: Array<(result: DeliveryResult) => void> = [];
  const events: string[] = [];
  const subscriber: Subscriber<readonly WrittenValue[]> = {
    deliver(values) {
      delivered.push(values);
      return new Promise((resolve) => finish.push(resolve));
    },
    replaced: () => events.push('replaced'),
    revoked: () => events.push('revoked'),
  };
  return { subscriber, delivered, finish, events };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('OwnWrites', () => {
  it('tells each accepted write to the device subscriber as key, value and the record time', () => {
    const writes = new OwnWrites(pino({ level: 'silent' }));
    const slow = slowSubscriber();
    writes.written(device.name, [{ ts: 1, values: { early: 0 } }]); // nobody listens yet: nothing kept
    writes.subscribe(device, slow.subscriber);
    writes.written(device.name, [{ ts: 5, values: { a: 1, b: 'x' } }, { ts: 9, values: { c: true } }]);
    writes.written('Pump-2', [{ ts: 5, values: { other: 1 } }]);
    expect(slow.delivered).toEqual([[{ key: 'a', value: 1, ts: 5 }, { key: 'b', value: 'x', ts: 5 }, { key: 'c', value: true, ts: 9 }]]);
  });

  it('holds only the latest write while one is in flight, and sends it when that one ends', async () => {
    const writes = new OwnWrites(pino({ level: 'silent' }));
    const slow = slowSubscriber();
    writes.subscribe(device, slow.subscriber);
    for (let value = 1; value <= 100; value++) writes.written(device.name, [{ ts: value, values: { n: value } }]);
    expect(slow.delivered).toHaveLength(1);
    slow.finish[0]!('acknowledged');
    await flush();
    expect(slow.delivered.map((values) => values[0]!.value)).toEqual([1, 100]);
    slow.finish[1]!('failed');
    await flush();
    expect(slow.delivered).toHaveLength(2);
  });

  it('replaces an older subscriber, which is told, and revokes on a reload; ended ones hear nothing more', async () => {
    const writes = new OwnWrites(pino({ level: 'silent' }));
    const older = slowSubscriber();
    const newer = slowSubscriber();
    writes.subscribe(device, older.subscriber);
    const subscription = writes.subscribe(device, newer.subscriber);
    expect(older.events).toEqual(['replaced']);
    writes.written(device.name, [{ ts: 1, values: { a: 1 } }]);
    writes.written(device.name, [{ ts: 2, values: { a: 2 } }]);
    expect([older.delivered.length, newer.delivered.length]).toEqual([0, 1]);
    subscription.end();
    newer.finish[0]!('acknowledged');
    await flush();
    // The write waiting behind the one in flight went with the subscription.
    expect(newer.delivered).toHaveLength(1);
    writes.subscribe(device, newer.subscriber);
    writes.revoke([device.name]);
    expect(newer.events).toEqual(['revoked']);
    writes.written(device.name, [{ ts: 3, values: { a: 3 } }]);
    expect(newer.delivered).toHaveLength(1);
  });
});
