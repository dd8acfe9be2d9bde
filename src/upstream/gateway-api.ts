// ThingsBoard's Gateway MQTT API: topics and the exact JSON shapes the server accepts
// (docs/thingsboard.md). One malformed message makes ThingsBoard close the whole gateway session, so
// every builder checks what it is given and every message is measured against the broker's size limit.
import { isUtf8 } from 'node:buffer';
import { keyedRecord, nestsDeeperThan } from '../json-safety.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall, TelemetryRecord } from '../model.js';
import { writeJson } from '../payload/json-text.js';

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
  /** The gateway device's own client-side RPC, which carries the children's (docs/thingsboard.md). */
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

/**
 * JSON as ThingsBoard's converter reads it. It takes a number for a double only when its text has a ".", and
 * for a long otherwise (Long.parseLong), and a number it cannot read closes the whole session. So:
 * - JavaScript's "1e-7" (any magnitude below 1e-6 with a one-digit mantissa) is written "1.0e-7";
 * - a double beyond 2^53 that JavaScript writes as plain digits ("10000000000000000000" for 1e19, beyond
 *   a long) gets ".0";
 * - an ExactInteger is written with its digits, so a long arrives as the device sent it.
 */
export function gatewayJson(value: unknown): string {
  return writeJson(value, thingsBoardNumber);
}

function thingsBoardNumber(value: number): string {
  const text = JSON.stringify(value);
  if (text.includes('e')) return text.includes('.') ? text : text.replace('e', '.0e');
  return Number.isInteger(value) && !Number.isSafeInteger(value) ? `${text}.0` : text;
}

function assertDeviceName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('gateway API messages need a device name');
}

export function connectMessage(device: Device): string {
  assertDeviceName(device.name);
  return JSON.stringify({ device: device.name, type: device.type });
}

/**
 * What a device sends up, reduced to the JSON fragment a publish embeds, so one publish can carry many
 * devices' items (upstream/batch.ts):
 * - telemetry: records `{"ts":..,"values":{..}},..` inside the device's array in `{"<device>":[..]}`;
 * - attributes, claim: the object in `{"<device>":{..}}`;
 * - rpcReply: the whole `{"device","id","data"}` message.
 */
export const UplinkKind = {
  telemetry: 1,
  attributes: 2,
  rpcReply: 3,
  claim: 4,
} as const;
export type UplinkKind = (typeof UplinkKind)[keyof typeof UplinkKind];

export interface UplinkItem {
  readonly kind: UplinkKind;
  /** The device's name, as the publish names it. */
  readonly device: string;
  readonly body: string;
  /** Telemetry data points (key-value pairs), which ThingsBoard rate-limits on their own. */
  readonly points: number;
}

export const topicOf = (kind: UplinkKind): string => {
  switch (kind) {
    case UplinkKind.telemetry:
      return Topic.telemetry;
    case UplinkKind.attributes:
      return Topic.attributes;
    case UplinkKind.rpcReply:
      return Topic.rpc;
    case UplinkKind.claim:
      return Topic.claim;
  }
};

/** Bytes a publish holding only this device's item adds around the item's body. */
export function frameBytes(kind: UplinkKind, deviceName: string): number {
  switch (kind) {
    case UplinkKind.telemetry:
      return Buffer.byteLength(JSON.stringify(deviceName)) + 5; // {"d":[ ]}
    case UplinkKind.attributes:
    case UplinkKind.claim:
      return Buffer.byteLength(JSON.stringify(deviceName)) + 3; // {"d": }
    case UplinkKind.rpcReply:
      return 0;
  }
}

/**
 * A device's telemetry records as items, as few as fit each on its own in a publish of `maxBytes`.
 * Throws MessageTooLargeError when a single record cannot fit.
 */
export function telemetryItems(deviceName: string, records: readonly TelemetryRecord[], maxBytes: number): UplinkItem[] {
  assertDeviceName(deviceName);
  const room = maxBytes - frameBytes(UplinkKind.telemetry, deviceName);
  const items: UplinkItem[] = [];
  let parts: string[] = [];
  let size = 0;
  let points = 0;
  for (const record of records) {
    if (!Number.isSafeInteger(record.ts) || record.values === null || typeof record.values !== 'object') {
      throw new TypeError('telemetry records need an integer ts and a values object');
    }
    const part = gatewayJson({ ts: record.ts, values: record.values });
    const partBytes = Buffer.byteLength(part);
    if (partBytes > room) throw new MessageTooLargeError(partBytes + maxBytes - room, maxBytes);
    if (parts.length > 0 && size + 1 + partBytes > room) {
      items.push({ kind: UplinkKind.telemetry, device: deviceName, body: parts.join(','), points });
      parts = [];
      size = 0;
      points = 0;
    }
    size += (parts.length > 0 ? 1 : 0) + partBytes;
    points += Object.keys(record.values).length;
    parts.push(part);
  }
  if (parts.length > 0) items.push({ kind: UplinkKind.telemetry, device: deviceName, body: parts.join(','), points });
  return items;
}

/** Client attributes; throws MessageTooLargeError when the publish would exceed `maxBytes`. */
export function attributesItem(deviceName: string, attributes: AttributeSet, maxBytes: number): UplinkItem {
  assertDeviceName(deviceName);
  if (attributes === null || typeof attributes !== 'object' || Array.isArray(attributes)) {
    throw new TypeError('client attributes must be an object');
  }
  return measuredItem(UplinkKind.attributes, deviceName, gatewayJson(attributes), maxBytes);
}

/** A device's answer to a server-side RPC: all three fields are mandatory on the server. */
export function rpcReplyItem(deviceName: string, id: number, data: JsonValue, maxBytes: number): UplinkItem {
  assertDeviceName(deviceName);
  if (!Number.isSafeInteger(id)) throw new TypeError('an RPC reply needs an integer id');
  return measuredItem(UplinkKind.rpcReply, deviceName, gatewayJson({ device: deviceName, id, data: data ?? null }), maxBytes);
}

export interface ClaimRequest {
  readonly secretKey?: string;
  readonly durationMs?: number;
}

export function claimItem(deviceName: string, claim: ClaimRequest): UplinkItem {
  assertDeviceName(deviceName);
  return { kind: UplinkKind.claim, device: deviceName, body: JSON.stringify(claim), points: 0 };
}

function measuredItem(kind: UplinkKind, deviceName: string, body: string, maxBytes: number): UplinkItem {
  const bytes = Buffer.byteLength(body) + frameBytes(kind, deviceName);
  if (bytes > maxBytes) throw new MessageTooLargeError(bytes, maxBytes);
  return { kind, device: deviceName, body, points: 0 };
}

export function disconnectMessage(deviceName: string): string {
  assertDeviceName(deviceName);
  return JSON.stringify({ device: deviceName });
}

/**
 * One scope per request, in the only form the server accepts: `client` a boolean, `key` for one key and
 * `keys` for several (docs/thingsboard.md#attribute-requests). `'all'` sends `keys: []`, which the server
 * answers with every client and shared attribute mixed in one `values`, scope lost.
 */
export function attributeRequestMessage(id: number, deviceName: string, client: boolean, keys: readonly string[] | 'all'): string {
  assertDeviceName(deviceName);
  if (!Number.isSafeInteger(id) || keys.length === 0) throw new TypeError('an attribute request needs an integer id and at least one key (or all)');
  if (keys === 'all') return JSON.stringify({ id, device: deviceName, client, keys: [] });
  return keys.length === 1
    ? JSON.stringify({ id, device: deviceName, client, key: keys[0] })
    : JSON.stringify({ id, device: deviceName, client, keys });
}

/** A child's client-side RPC relayed as the gateway's own (the rule-chain contract: docs/thingsboard.md). */
export function ownRpcRequestMessage(deviceName: string, method: string, params: JsonValue, maxBytes: number): string {
  assertDeviceName(deviceName);
  return measured(gatewayJson({ method, params: { device: deviceName, params } }), maxBytes);
}

function measured(message: string, maxBytes: number): string {
  const bytes = Buffer.byteLength(message);
  if (bytes > maxBytes) throw new MessageTooLargeError(bytes, maxBytes);
  return message;
}

/** ThingsBoard's RPC ids are Java ints, and it reads a reply's id as one: a larger id would answer another RPC. */
export const MAX_RPC_ID = 2_147_483_647;

/** Why a message from upstream was refused, as the metrics label it. */
export type DownlinkRefusal = 'too_large' | 'too_deep' | 'not_utf8' | 'not_json' | 'malformed' | 'unknown_device';

/** The bounds every downlink message is held to (upstream.maxDownlinkBytes, upstream.maxDownlinkDepth). */
export interface DownlinkBounds {
  readonly maxBytes: number;
  readonly maxDepth: number;
}

/** What arrives from ThingsBoard, checked once here; everything after trusts these types. */
export type Downlink =
  | { readonly kind: 'shared-attributes'; readonly device: string; readonly update: AttributeUpdate }
  | { readonly kind: 'rpc'; readonly device: string; readonly call: RpcCall }
  | { readonly kind: 'attribute-response'; readonly id: number; readonly device: string | undefined; readonly found: AttributeAnswer }
  | { readonly kind: 'own-rpc-response'; readonly requestId: number; readonly body: JsonValue }
  /** One of the gateway's own uplinks: a plain MQTT broker (the embedded one, mosquitto) sends subscribers their own messages; ThingsBoard does not. */
  | { readonly kind: 'echo' }
  | {
      readonly kind: 'invalid';
      readonly refusal: Exclude<DownlinkRefusal, 'unknown_device'>;
      readonly reason: string;
      /** A server-side RPC whose device and id could be read: ThingsBoard is answered with an error rather than left to time out. */
      readonly rpc?: { readonly device: string; readonly id: number };
    };

/** One key asked → a bare `value`; several → `values`; nothing found → neither (docs/thingsboard.md). */
export type AttributeAnswer =
  | { readonly form: 'value'; readonly value: JsonValue }
  | { readonly form: 'values'; readonly values: AttributeSet }
  | { readonly form: 'none' };

type JsonObject = { readonly [key: string]: JsonValue };

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const malformed = (reason: string): Downlink => ({ kind: 'invalid', refusal: 'malformed', reason });

/**
 * Checks a message from upstream against the bounds before anything walks it: size first (nothing is
 * decoded beyond it), then UTF-8, then depth measured on the text, then the shape of its topic.
 */
export function parseDownlink(topic: string, payload: Buffer, bounds: DownlinkBounds): Downlink {
  if (payload.length > bounds.maxBytes) {
    return { kind: 'invalid', refusal: 'too_large', reason: `${payload.length} bytes, larger than upstream.maxDownlinkBytes (${bounds.maxBytes})` };
  }
  if (!isUtf8(payload)) return { kind: 'invalid', refusal: 'not_utf8', reason: 'not valid UTF-8' };
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return { kind: 'invalid', refusal: 'not_json', reason: 'not JSON' };
  }
  if (nestsDeeperThan(payload, bounds.maxDepth)) {
    // Reading two top-level fields of a value already parsed walks nothing deep.
    const rpc = topic === Topic.rpc && isObject(body) ? rpcIdentity(body) : undefined;
    return {
      kind: 'invalid',
      refusal: 'too_deep',
      reason: `JSON nests deeper than upstream.maxDownlinkDepth (${bounds.maxDepth} levels)`,
      ...(rpc ? { rpc } : {}),
    };
  }
  if (topic.startsWith(Topic.ownRpcResponsePrefix)) {
    const requestId = Number(topic.slice(Topic.ownRpcResponsePrefix.length));
    if (!Number.isSafeInteger(requestId)) return malformed('RPC response topic without a numeric request id');
    return { kind: 'own-rpc-response', requestId, body: body as JsonValue };
  }
  if (!isObject(body)) return malformed('not a JSON object');
  switch (topic) {
    case Topic.attributes:
      return parseAttributePush(body);
    case Topic.rpc:
      return parseRpcRequest(body);
    case Topic.attributeResponse:
      return parseAttributeResponse(body);
    default:
      return malformed('a topic the gateway does not subscribe to');
  }
}

function deviceOf(body: JsonObject): string | undefined {
  const device = body['device'];
  return typeof device === 'string' && device !== '' ? device : undefined;
}

const isRpcId = (id: unknown): id is number => typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= MAX_RPC_ID;

/** The device and id of an RPC request, when both are usable in a reply. */
function rpcIdentity(body: JsonObject): { readonly device: string; readonly id: number } | undefined {
  const device = deviceOf(body);
  const data = body['data'];
  const id = isObject(data) ? data['id'] : undefined;
  return device !== undefined && isRpcId(id) ? { device, id } : undefined;
}

function parseAttributePush(body: JsonObject): Downlink {
  const device = deviceOf(body);
  const data = body['data'];
  // Client attributes as the gateway publishes them: {"<device>":{..}}, never "device" with "data".
  if (device === undefined && data === undefined) return { kind: 'echo' };
  if (!device || !isObject(data)) return malformed('attribute push without "device" or a "data" object');
  const changed = keyedRecord<JsonValue>();
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
  // A device's reply as the gateway publishes it: {"device","id","data"}; requests carry the id in "data".
  if (Object.hasOwn(body, 'id')) return { kind: 'echo' };
  const device = deviceOf(body);
  const data = body['data'];
  if (!device || !isObject(data)) return malformed('RPC request without "device" or a "data" object');
  const id = data['id'];
  const method = data['method'];
  if (!isRpcId(id) || typeof method !== 'string') {
    return malformed(`RPC request without an "id" from 0 to ${MAX_RPC_ID} and a "method" string`);
  }
  return { kind: 'rpc', device, call: { id, method, params: data['params'] ?? {} } };
}

function parseAttributeResponse(body: JsonObject): Downlink {
  const id = body['id'];
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) return malformed('attribute response without an integer "id"');
  const device = deviceOf(body);
  const values = body['values'];
  if (isObject(values)) return { kind: 'attribute-response', id, device, found: { form: 'values', values } };
  if (Object.hasOwn(body, 'value')) return { kind: 'attribute-response', id, device, found: { form: 'value', value: body['value'] as JsonValue } };
  return { kind: 'attribute-response', id, device, found: { form: 'none' } };
}

/** The gateway asks ThingsBoard for its session limits on `v1/devices/me/rpc/request/{n}` (§1). */
export const SESSION_LIMITS_REQUEST = JSON.stringify({ method: 'getSessionLimits', params: {} });

/** "capacity per so many seconds", from ThingsBoard's "100:1,3000:60" notation. */
export interface RateLimit {
  readonly capacity: number;
  readonly seconds: number;
}

export interface SessionLimits {
  readonly maxPayloadSize: number | undefined;
  readonly maxInflightMessages: number | undefined;
  readonly messages: readonly RateLimit[];
  readonly telemetryMessages: readonly RateLimit[];
  readonly telemetryDataPoints: readonly RateLimit[];
}

/**
 * The answer to getSessionLimits: `{"maxPayloadSize","maxInflightMessages","rateLimits":{..},
 * "gatewayRateLimits":{"messages":"cap:sec,..","telemetryMessages":..,"telemetryDataPoints":..}}`. The
 * gateway's limits count all its children's messages together, so they win over the device-level ones.
 * Undefined when the answer is not of that shape (an older server, or a rule chain answering it).
 */
export function parseSessionLimits(body: JsonValue): SessionLimits | undefined {
  if (!isObject(body)) return undefined;
  const positive = (value: JsonValue | undefined): number | undefined =>
    typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const maxPayloadSize = positive(body['maxPayloadSize']);
  const maxInflightMessages = positive(body['maxInflightMessages']);
  const gateway = body['gatewayRateLimits'];
  const device = body['rateLimits'];
  const limits = isObject(gateway) ? gateway : isObject(device) ? device : {};
  const parsed: SessionLimits = {
    maxPayloadSize,
    maxInflightMessages,
    messages: parseRateLimits(limits['messages']),
    telemetryMessages: parseRateLimits(limits['telemetryMessages']),
    telemetryDataPoints: parseRateLimits(limits['telemetryDataPoints']),
  };
  const anything =
    maxPayloadSize !== undefined || maxInflightMessages !== undefined || parsed.messages.length + parsed.telemetryMessages.length + parsed.telemetryDataPoints.length > 0;
  return anything ? parsed : undefined;
}

function parseRateLimits(value: JsonValue | undefined): RateLimit[] {
  if (typeof value !== 'string') return [];
  const limits: RateLimit[] = [];
  for (const part of value.split(',')) {
    const match = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(part);
    if (!match) continue;
    const capacity = Number(match[1]);
    const seconds = Number(match[2]);
    if (capacity > 0 && seconds > 0) limits.push({ capacity, seconds });
  }
  return limits;
}
