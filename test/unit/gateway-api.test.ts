import { describe, expect, it } from 'vitest';
import { MessageTooLargeError, attributesMessage, connectMessage, telemetryMessages } from '../../src/upstream/gateway-api.js';

describe('gateway API messages', () => {
  it('builds connect with the device profile', () => {
    expect(JSON.parse(connectMessage({ name: 'Boiler-7', type: 'thermostat' }))).toEqual({ device: 'Boiler-7', type: 'thermostat' });
  });

  it('builds telemetry as an array of {ts, values} under the device name', () => {
    const [message] = telemetryMessages('Boiler "7"', [{ ts: 1, values: { a: 1 } }, { ts: 2, values: { b: 'x' } }], 65536);
    expect(JSON.parse(message!)).toEqual({ 'Boiler "7"': [{ ts: 1, values: { a: 1 } }, { ts: 2, values: { b: 'x' } }] });
  });

  it('splits many records into messages that each fit the limit, keeping order', () => {
    const records = Array.from({ length: 500 }, (_, i) => ({ ts: 1_700_000_000_000 + i, values: { sensor: i, label: 'é'.repeat(20) } }));
    const messages = telemetryMessages('Pump-2', records, 4096);
    expect(messages.length).toBeGreaterThan(1);
    for (const message of messages) expect(Buffer.byteLength(message)).toBeLessThanOrEqual(4096);
    const all = messages.flatMap((message) => (JSON.parse(message) as Record<string, unknown[]>)['Pump-2']!);
    expect(all).toEqual(records);
  });

  it('refuses a record that cannot fit even alone', () => {
    expect(() => telemetryMessages('X', [{ ts: 1, values: { blob: 'x'.repeat(5000) } }], 4096)).toThrow(MessageTooLargeError);
    expect(() => attributesMessage('X', { blob: 'x'.repeat(5000) }, 4096)).toThrow(MessageTooLargeError);
  });

  it('refuses shapes that would make ThingsBoard drop the session', () => {
    expect(() => telemetryMessages('', [{ ts: 1, values: {} }], 4096)).toThrow(TypeError);
    expect(() => telemetryMessages('X', [{ ts: 1.5, values: {} }], 4096)).toThrow(TypeError);
    expect(() => attributesMessage('X', [] as unknown as Record<string, never>, 4096)).toThrow(TypeError);
  });
});
