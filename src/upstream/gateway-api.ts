// ThingsBoard's Gateway MQTT API: topics and the exact JSON shapes the server accepts
// (gateway-mqtt-api.md). One malformed message makes ThingsBoard close the whole gateway session, so
// every builder checks what it is given and every message is measured against the broker's size limit.
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall, TelemetryRecord } from '../model.js';

export const Topic = {
  connect: 'v1/gateway/connect',
  disconnect: 'v1/gateway/disconnect',
  telemetry: 'v1/gateway/telemetry',
  /** Client attributes up; shared-attribute pushes down. */
  attributes: 'v1/gateway/attributes',
  attributeRequest: 'v1/gateway/attributes/request',
  attributeResponse: 'v1/gateway/attributes/response',
  /** Server-side RPC requests down; the devices' replies up. */
  rpc: 'v1/gateway/rpc',
  claim: 'v1/gateway/claim',
  /** The gateway device's own client-side RPC, which carries the children's (gateway-mqtt-api.md §7). */
  ownRpcRequestPrefix: 'v1/devices/me/rpc/request/',
  ownRpcResponsePrefix: 'v1/devices/me/rpc/response/',
} as const;

/**
 * Exactly what the gateway subscribes to: the three server→gateway topics (ThingsBoard refuses wildcards
 * such as v1/gateway/#) and the answers to the gateway's own RPCs.
 */
export const DOWNLINK_TOPICS = [
  Topic.attributes,
  Topic.attributeResponse,
  Topic.rpc,
  `${Topic.ownRpcResponsePrefix}+`,
] as const;

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
  return measured(`{${JSON.stringify(deviceName)}:${JSON.stringify(attributes)}}`, maxBytes);
}

export function disconnectMessage(deviceName: string): string {
  assertDeviceName(deviceName);
  return JSON.stringify({ device: deviceName });
}

/**
 * One scope per request, in the only form the server accepts: `client` a boolean, `key` for one key and
 * `keys` for several (gateway-mqtt-api.md §5).
 */
export function attributeRequestMessage(id: number, deviceName: string, client: boolean, keys: readonly string[]): string {
  assertDeviceName(deviceName);
  if (!Number.isSafeInteger(id) || keys.length === 0) throw new TypeError('an attribute request needs an integer id and at least one key');
  return keys.length === 1
    ? JSON.stringify({ id, device: deviceName, client, key: keys[0] })
    : JSON.stringify({ id, device: deviceName, client, keys });
}

/** A device's answer to a server-side RPC: all three fields are mandatory on the server. */
export function rpcReplyMessage(deviceName: string, id: number, data: JsonValue, maxBytes: number): string {
  assertDeviceName(deviceName);
  if (!Number.isSafeInteger(id)) throw new TypeError('an RPC reply needs an integer id');
  return measured(JSON.stringify({ device: deviceName, id, data: data ?? null }), maxBytes);
}

export interface ClaimRequest {
  readonly secretKey?: string;
  readonly durationMs?: number;
}

export function claimMessage(deviceName: string, claim: ClaimRequest): string {
  assertDeviceName(deviceName);
  return JSON.stringify({ [deviceName]: claim });
}

/** A child's client-side RPC relayed as the gateway's own (the rule chain contract is in the README). */
export function ownRpcRequestMessage(deviceName: string, method: string, params: JsonValue, maxBytes: number): string {
  assertDeviceName(deviceName);
  return measured(JSON.stringify({ method, params: { device: deviceName, params } }), maxBytes);
}

function measured(message: string, maxBytes: number): string {
  const bytes = Buffer.byteLength(message);
  if (bytes > maxBytes) throw new MessageTooLargeError(bytes, maxBytes);
  return message;
}

/** What arrives from ThingsBoard, checked once here; everything after trusts these types. */
export type Downlink =
  | { readonly kind: 'shared-attributes'; readonly device: string; readonly update: AttributeUpdate }
  | { readonly kind: 'rpc'; readonly device: string; readonly call: RpcCall }
  | { readonly kind: 'attribute-response'; readonly id: number; readonly device: string | undefined; readonly found: AttributeAnswer }
  | { readonly kind: 'own-rpc-response'; readonly requestId: number; readonly body: JsonValue }
  | { readonly kind: 'invalid'; readonly reason: string };

/** One key asked → a bare `value`; several → `values`; nothing found → neither (gateway-mqtt-api.md §5). */
export type AttributeAnswer =
  | { readonly form: 'value'; readonly value: JsonValue }
  | { readonly form: 'values'; readonly values: AttributeSet }
  | { readonly form: 'none' };

type JsonObject = { readonly [key: string]: JsonValue };

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

export function parseDownlink(topic: string, payload: Buffer): Downlink {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return { kind: 'invalid', reason: 'not JSON' };
  }
  if (topic.startsWith(Topic.ownRpcResponsePrefix)) {
    const requestId = Number(topic.slice(Topic.ownRpcResponsePrefix.length));
    if (!Number.isSafeInteger(requestId)) return { kind: 'invalid', reason: 'RPC response topic without a numeric request id' };
    return { kind: 'own-rpc-response', requestId, body: body as JsonValue };
  }
  if (!isObject(body)) return { kind: 'invalid', reason: 'not a JSON object' };
  switch (topic) {
    case Topic.attributes:
      return parseAttributePush(body);
    case Topic.rpc:
      return parseRpcRequest(body);
    case Topic.attributeResponse:
      return parseAttributeResponse(body);
    default:
      return { kind: 'invalid', reason: 'a topic the gateway does not subscribe to' };
  }
}

function deviceOf(body: JsonObject): string | undefined {
  const device = body['device'];
  return typeof device === 'string' && device !== '' ? device : undefined;
}

function parseAttributePush(body: JsonObject): Downlink {
  const device = deviceOf(body);
  const data = body['data'];
  if (!device || !isObject(data)) return { kind: 'invalid', reason: 'attribute push without "device" or a "data" object' };
  const changed: Record<string, JsonValue> = {};
  let deleted: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    if (key === 'deleted' && Array.isArray(value)) {
      deleted = value.filter((k): k is string => typeof k === 'string');
    } else {
      changed[key] = value;
    }
  }
  return { kind: 'shared-attributes', device, update: { changed, deleted } };
}

function parseRpcRequest(body: JsonObject): Downlink {
  const device = deviceOf(body);
  const data = body['data'];
  if (!device || !isObject(data)) return { kind: 'invalid', reason: 'RPC request without "device" or a "data" object' };
  const id = data['id'];
  const method = data['method'];
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || typeof method !== 'string') {
    return { kind: 'invalid', reason: 'RPC request without an integer "id" and a "method"' };
  }
  return { kind: 'rpc', device, call: { id, method, params: data['params'] ?? {} } };
}

function parseAttributeResponse(body: JsonObject): Downlink {
  const id = body['id'];
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) return { kind: 'invalid', reason: 'attribute response without an integer "id"' };
  const device = deviceOf(body);
  const values = body['values'];
  if (isObject(values)) return { kind: 'attribute-response', id, device, found: { form: 'values', values } };
  if (Object.hasOwn(body, 'value')) return { kind: 'attribute-response', id, device, found: { form: 'value', value: body['value'] as JsonValue } };
  return { kind: 'attribute-response', id, device, found: { form: 'none' } };
}
