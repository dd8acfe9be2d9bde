// ThingsBoard's Gateway MQTT API: topics and the exact JSON shapes the server accepts
// (gateway-mqtt-api.md). One malformed message makes ThingsBoard close the whole gateway session, so
// every builder checks what it is given and every message is measured against the broker's size limit.
import type { AttributeSet, Device, TelemetryRecord } from '../model.js';

export const Topic = {
  connect: 'v1/gateway/connect',
  disconnect: 'v1/gateway/disconnect',
  telemetry: 'v1/gateway/telemetry',
  attributes: 'v1/gateway/attributes',
} as const;

export class MessageTooLargeError extends Error {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`message of ${bytes} bytes exceeds the broker limit of ${limit} bytes`);
  }
}

function assertDeviceName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('gateway API messages need a device name');
}

export function connectMessage(device: Device): string {
  assertDeviceName(device.name);
  return JSON.stringify({ device: device.name, type: device.type });
}

/**
 * `{"<device>":[{"ts":..,"values":{..}},..]}`, split into as few messages as fit under `maxBytes`.
 * Throws MessageTooLargeError when a single record cannot fit on its own.
 */
export function telemetryMessages(deviceName: string, records: readonly TelemetryRecord[], maxBytes: number): string[] {
  assertDeviceName(deviceName);
  const head = `{${JSON.stringify(deviceName)}:[`;
  const tail = ']}';
  const frame = Buffer.byteLength(head) + tail.length;
  const messages: string[] = [];
  let parts: string[] = [];
  let size = frame;
  for (const record of records) {
    if (!Number.isSafeInteger(record.ts) || record.values === null || typeof record.values !== 'object') {
      throw new TypeError('telemetry records need an integer ts and a values object');
    }
    const part = JSON.stringify({ ts: record.ts, values: record.values });
    const partBytes = Buffer.byteLength(part);
    if (frame + partBytes > maxBytes) throw new MessageTooLargeError(frame + partBytes, maxBytes);
    const separator = parts.length > 0 ? 1 : 0;
    if (size + separator + partBytes > maxBytes) {
      messages.push(head + parts.join(',') + tail);
      parts = [];
      size = frame;
    }
    size += (parts.length > 0 ? 1 : 0) + partBytes;
    parts.push(part);
  }
  if (parts.length > 0) messages.push(head + parts.join(',') + tail);
  return messages;
}

/** `{"<device>":{"key":value,..}}`; throws MessageTooLargeError above `maxBytes`. */
export function attributesMessage(deviceName: string, attributes: AttributeSet, maxBytes: number): string {
  assertDeviceName(deviceName);
  if (attributes === null || typeof attributes !== 'object' || Array.isArray(attributes)) {
    throw new TypeError('client attributes must be an object');
  }
  const message = `{${JSON.stringify(deviceName)}:${JSON.stringify(attributes)}}`;
  const bytes = Buffer.byteLength(message);
  if (bytes > maxBytes) throw new MessageTooLargeError(bytes, maxBytes);
  return message;
}
