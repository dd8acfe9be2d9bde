// ThingsBoard's key-value JSON as devices send it (docs/device-api-coap.md), parsed and checked once, at the edge,
// into typed records. Everything that would make ThingsBoard drop the gateway's whole MQTT session, or
// silently change a value, is refused here with a message the firmware author can act on.
import { ExactInteger, type AttributeSet, type JsonValue, type TelemetryRecord } from '../model.js';
import type { ClaimRequest } from '../upstream/gateway-api.js';
import { decodeUtf8, isJsonObject, JsonTooDeepError, parseJsonText } from './json-text.js';

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

const MAX_KEY_LENGTH = 255;
const MAX_NESTING = 32;
// ThingsBoard stores integers as Java longs and rejects larger ones (JsonConverter; docs/device-api-coap.md).
const LONG_MIN = -(2n ** 63n);
const LONG_MAX = 2n ** 63n - 1n;

const fail = (error: string): { ok: false; error: string } => ({ ok: false, error });

/**
 * A device's JSON body. Bytes that are not UTF-8 are refused, not replaced by U+FFFD (which would change
 * keys and strings on their way upstream); integers beyond ±2^53 keep their digits (ExactInteger).
 */
export function parseJson(body: Buffer): Parsed<unknown> {
  if (body.length === 0) return fail('empty payload: expected JSON such as {"temperature":21.5}');
  const decoded = decodeUtf8(body);
  if ('invalidAt' in decoded) {
    const at = decoded.invalidAt;
    return fail(`payload is not valid UTF-8: byte ${at} (0x${body[at]!.toString(16).padStart(2, '0')}) starts no valid character; JSON must be UTF-8 (send binary data as base64 in a string)`);
  }
  try {
    return { ok: true, value: parseJsonText(decoded.text) };
  } catch (error) {
    if (error instanceof JsonTooDeepError) return fail(error.message);
    return fail(`malformed JSON: ${(error as Error).message}`);
  }
}

/**
 * Telemetry: `{"k":v}`, `{"ts":ms,"values":{..}}`, or an array of either. Records without a `ts` get
 * `receivedAt`, so readings delivered after an outage keep the time they were taken.
 */
export function parseTelemetry(body: Buffer, receivedAt: number): Parsed<TelemetryRecord[]> {
  const json = parseJson(body);
  return json.ok ? telemetryFromJson(json.value, receivedAt) : json;
}

/** The same checks on telemetry already parsed from JSON (other dialects build it from their own shape). */
export function telemetryFromJson(top: unknown, receivedAt: number): Parsed<TelemetryRecord[]> {
  const elements = Array.isArray(top) ? top : [top];
  if (!Array.isArray(top) && !isJsonObject(top)) {
    return fail(`telemetry must be a JSON object or an array of objects, not ${describe(top)}`);
  }
  const records: TelemetryRecord[] = [];
  for (let i = 0; i < elements.length; i++) {
    const element = elements[i];
    const where = Array.isArray(top) ? `element ${i}: ` : '';
    if (!isJsonObject(element)) return fail(`${where}telemetry array elements must be objects, not ${describe(element)}`);
    let ts = receivedAt;
    let rawValues: Record<string, unknown> = element;
    // Exactly ThingsBoard's rule: the timestamped form needs both keys; otherwise "ts" is just a key.
    if ('ts' in element && 'values' in element) {
      const parsedTs = parseTimestamp(element.ts);
      if (parsedTs === undefined) {
        return fail(`${where}ts must be an integer number of milliseconds since 1970, not ${describe(element.ts)}`);
      }
      if (!isJsonObject(element.values)) return fail(`${where}values must be an object, not ${describe(element.values)}`);
      ts = parsedTs;
      rawValues = element.values;
    }
    const values = checkValues(rawValues, where);
    if (!values.ok) return values;
    if (Object.keys(values.value).length > 0) records.push({ ts, values: values.value });
  }
  return { ok: true, value: records };
}

/** Client attributes: one JSON object. */
export function parseAttributes(body: Buffer): Parsed<AttributeSet> {
  const json = parseJson(body);
  if (!json.ok) return json;
  if (!isJsonObject(json.value)) return fail(`attributes must be a JSON object, not ${describe(json.value)}`);
  return checkValues(json.value, '');
}

/** ThingsBoard's RPC ids are Java ints and it reads a reply's id as one: a larger id would answer another RPC. */
const MAX_RPC_ID = 2_147_483_647;

/** The `{id}` of `POST /rpc/{id}`. */
export function parseRpcId(text: string): Parsed<number> {
  return /^\d{1,10}$/.test(text) && Number(text) <= MAX_RPC_ID ? { ok: true, value: Number(text) } : fail(`RPC id "${text}" is not a whole number from 0 to ${MAX_RPC_ID}`);
}

/** A device's answer to a server-side RPC (`POST /rpc/{id}`): any JSON, passed on as the reply's `data`. */
export function parseRpcReply(body: Buffer): Parsed<JsonValue> {
  const json = parseJson(body);
  if (!json.ok) return json;
  const problem = checkNested(json.value, 0);
  return problem ? fail(`the reply ${problem}`) : { ok: true, value: json.value as JsonValue };
}

export interface ClientRpcRequest {
  readonly method: string;
  readonly params: JsonValue;
}

/** A client-side RPC (`POST /rpc`): `{"method":"..","params":..}`; params default to {}. */
export function parseClientRpc(body: Buffer): Parsed<ClientRpcRequest> {
  const json = parseJson(body);
  if (!json.ok) return json;
  const value = json.value;
  if (!isJsonObject(value)) return fail(`a client-side RPC must be a JSON object {"method":"..","params":..}, not ${describe(value)}`);
  const { method, params } = value;
  if (typeof method !== 'string' || method.trim() === '') return fail('a client-side RPC needs "method", a non-empty string');
  const problem = checkNested(params, 1);
  if (problem) return fail(`"params" ${problem}`);
  return { ok: true, value: { method, params: (params ?? {}) as JsonValue } };
}

/** A claim (`POST /claim`): empty, or `{"secretKey":"..","durationMs":..}` with both optional. */
export function parseClaim(body: Buffer): Parsed<ClaimRequest> {
  if (body.length === 0) return { ok: true, value: {} };
  const json = parseJson(body);
  if (!json.ok) return json;
  const value = json.value;
  if (!isJsonObject(value)) return fail(`a claim must be a JSON object {"secretKey":"..","durationMs":..}, not ${describe(value)}`);
  const { secretKey, durationMs } = value;
  if (secretKey !== undefined && typeof secretKey !== 'string') return fail('"secretKey" must be a string');
  if (durationMs !== undefined && (typeof durationMs !== 'number' || !Number.isSafeInteger(durationMs) || durationMs <= 0)) {
    return fail('"durationMs" must be a positive whole number of milliseconds');
  }
  return {
    ok: true,
    value: {
      ...(secretKey !== undefined ? { secretKey } : {}),
      ...(durationMs !== undefined ? { durationMs: durationMs as number } : {}),
    },
  };
}

/**
 * `clientKeys` and `sharedKeys` from Uri-Query options (`clientKeys=a,b`); a key may be repeated across
 * options. Unknown query parameters are ignored, as ThingsBoard does.
 */
export function parseAttributeKeys(query: readonly string[]): { readonly client: string[]; readonly shared: string[] } {
  const client = new Set<string>();
  const shared = new Set<string>();
  for (const item of query) {
    const equals = item.indexOf('=');
    if (equals < 0) continue;
    const name = item.slice(0, equals);
    const target = name === 'clientKeys' ? client : name === 'sharedKeys' ? shared : undefined;
    if (!target) continue;
    for (const key of item.slice(equals + 1).split(',')) {
      const trimmed = key.trim();
      if (trimmed !== '') target.add(trimmed);
    }
  }
  return { client: [...client], shared: [...shared] };
}

function parseTimestamp(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (typeof value === 'string' && /^\d{1,16}$/.test(value)) {
    // Sixteen digits can exceed 2^53, where a number no longer holds the milliseconds exactly.
    const ms = Number(value);
    return Number.isSafeInteger(ms) ? ms : undefined;
  }
  return undefined;
}

/** Drops null values (as ThingsBoard does) and refuses keys and values ThingsBoard cannot take. */
function checkValues(raw: Record<string, unknown>, where: string): Parsed<Record<string, JsonValue>> {
  let result: Record<string, JsonValue> | undefined;
  const keys = Object.keys(raw);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const value = raw[key];
    if (key.length === 0) return fail(`${where}keys must not be empty`);
    if (key.length > MAX_KEY_LENGTH) return fail(`${where}key "${key.slice(0, 32)}…" is longer than ${MAX_KEY_LENGTH} characters`);
    if (value === null) {
      // Copy on the first null only; the common case keeps the parsed object as it is.
      if (!result) {
        result = Object.create(null) as Record<string, JsonValue>;
        for (let j = 0; j < i; j++) result[keys[j]!] = raw[keys[j]!] as JsonValue;
      }
      continue;
    }
    if (typeof value === 'number') {
      // A literal with a fraction or an exponent is a double, however large (integers beyond 2^53 are ExactIntegers).
      if (!Number.isFinite(value)) return fail(`${where}value of "${key}" is beyond the range of a double (±1.8e308)`);
    } else if (value instanceof ExactInteger) {
      const integer = BigInt(value.digits);
      if (integer < LONG_MIN || integer > LONG_MAX) {
        return fail(`${where}value of "${key}" is an integer beyond the 64-bit range ThingsBoard stores (${LONG_MIN} to ${LONG_MAX}); send it as a string, or as a double with a decimal point`);
      }
    } else if (typeof value === 'object') {
      const problem = checkNested(value, 1);
      if (problem) return fail(`${where}value of "${key}" ${problem}`);
    }
    if (result) result[key] = value as JsonValue;
  }
  return { ok: true, value: result ?? (raw as Record<string, JsonValue>) };
}

/** Nested JSON values are stored as JSON upstream; only depth and non-finite numbers need refusing. */
function checkNested(value: unknown, depth: number): string | undefined {
  if (depth > MAX_NESTING) return `nests deeper than ${MAX_NESTING} levels`;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : 'contains a number out of range';
  // Kept as JSON text upstream, so any size passes that a double could still approximate for other readers.
  if (value instanceof ExactInteger) return Number.isFinite(Number(value.digits)) ? undefined : 'contains a number out of range';
  if (value === null || typeof value !== 'object') return undefined;
  for (const child of Array.isArray(value) ? value : Object.values(value)) {
    const problem = checkNested(child, depth + 1);
    if (problem) return problem;
  }
  return undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value instanceof ExactInteger) return `number ${value.digits.length > 40 ? `${value.digits.slice(0, 40)}…` : value.digits}`;
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value);
  return `${typeof value} ${text.length > 40 ? `${text.slice(0, 40)}…` : text}`;
}
