// Provisioning and firmware requests as devices send them (docs/device-api-coap.md), checked once at the edge.
// Shared by every device-facing front end, through the device API (src/device-api/provision.ts).
import type { JsonValue } from '../model.js';
import { isJsonObject } from './json-text.js';
import { parseJson, type Parsed } from './thingsboard-json.js';

export const CREDENTIALS_TYPES = ['ACCESS_TOKEN', 'MQTT_BASIC', 'X509_CERTIFICATE'] as const;
export type CredentialsType = (typeof CREDENTIALS_TYPES)[number];

export interface ProvisionRequest {
  /** Absent or empty: the gateway supplies one. */
  readonly deviceName: string | undefined;
  readonly provisionDeviceKey: string;
  readonly provisionDeviceSecret: string;
  readonly credentialsType: CredentialsType;
  /** For ACCESS_TOKEN: the token the device asks for, if any. */
  readonly token: string | undefined;
  /** The request as the device sent it; fields the gateway does not read go upstream unchanged. */
  readonly body: Readonly<Record<string, JsonValue>>;
}

/** ThingsBoard's answer (and the gateway's own in local mode), passed to the device as it is. */
export type ProvisionAnswer =
  | {
      readonly status: 'SUCCESS';
      readonly credentialsType: string;
      /** A token for ACCESS_TOKEN; an object for MQTT_BASIC. */
      readonly credentialsValue: JsonValue;
      readonly body: Readonly<Record<string, JsonValue>>;
    }
  | { readonly status: 'NOT_FOUND' | 'FAILURE'; readonly errorMsg: string; readonly body: Readonly<Record<string, JsonValue>> };

const MAX_NAME_LENGTH = 255;

export function parseProvisionRequest(payload: Buffer): Parsed<ProvisionRequest> {
  if (payload.length === 0) return fail('empty body: send {"deviceName": "...", "provisionDeviceKey": "...", "provisionDeviceSecret": "..."}');
  const json = parseJson(payload);
  if (!json.ok) return fail(json.error.startsWith('malformed JSON') ? 'body is not valid JSON' : json.error);
  const body = json.value;
  if (!isJsonObject(body)) return fail('body must be a JSON object');
  const record = body as Record<string, JsonValue>;
  const { deviceName, provisionDeviceKey, provisionDeviceSecret, credentialsType = 'ACCESS_TOKEN', token } = record;
  if (typeof provisionDeviceKey !== 'string' || provisionDeviceKey === '') return fail('provisionDeviceKey must be a non-empty string');
  if (typeof provisionDeviceSecret !== 'string' || provisionDeviceSecret === '') return fail('provisionDeviceSecret must be a non-empty string');
  if (deviceName !== undefined && deviceName !== null && (typeof deviceName !== 'string' || deviceName.length > MAX_NAME_LENGTH)) {
    return fail(`deviceName must be a string of at most ${MAX_NAME_LENGTH} characters`);
  }
  if (typeof credentialsType !== 'string' || !(CREDENTIALS_TYPES as readonly string[]).includes(credentialsType)) {
    return fail(`credentialsType must be one of ${CREDENTIALS_TYPES.join(', ')}`);
  }
  if (token !== undefined && token !== null && (typeof token !== 'string' || !isPathSafeToken(token))) {
    return fail('token must be a string without spaces, "/", "?" or "#", at most 255 characters');
  }
  return {
    ok: true,
    value: {
      deviceName: typeof deviceName === 'string' && deviceName.trim() !== '' ? deviceName : undefined,
      provisionDeviceKey,
      provisionDeviceSecret,
      credentialsType: credentialsType as CredentialsType,
      token: typeof token === 'string' && token !== '' ? token : undefined,
      body: record,
    },
  };
}

/** ThingsBoard's answer on /provision/response; undefined when it is not one (then nothing can be relayed). */
export function parseProvisionAnswer(payload: Buffer): ProvisionAnswer | undefined {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined;
  const record = body as Record<string, JsonValue>;
  const { status } = record;
  if (status === 'SUCCESS') {
    const { credentialsType, credentialsValue } = record;
    if (typeof credentialsType !== 'string' || credentialsValue === undefined) return undefined;
    return { status, credentialsType, credentialsValue, body: record };
  }
  if (status === 'NOT_FOUND' || status === 'FAILURE') {
    return { status, errorMsg: typeof record.errorMsg === 'string' ? record.errorMsg : '', body: record };
  }
  return undefined;
}

/** A token usable as one segment of a CoAP (or HTTP) path, as the device registry requires. */
export function isPathSafeToken(token: string): boolean {
  return token !== '' && token.length <= 255 && !/[\s/?#]/.test(token);
}

/** The failure answer a device gets for a request refused at the gateway, in ThingsBoard's shape. */
export function provisionFailure(status: 'NOT_FOUND' | 'FAILURE', errorMsg: string): ProvisionAnswer {
  return { status, errorMsg, body: { errorMsg, status } };
}

export interface FirmwareQuery {
  readonly title: string | undefined;
  readonly version: string | undefined;
  /** With `chunk`: only bytes [chunk × size, chunk × size + size) are sent. 0 or absent: the whole image. */
  readonly size: number;
  readonly chunk: number;
}

/** `title`, `version`, `size`, `chunk` from "name=value" query items (CoAP Uri-Query options, or a URL's). */
export function parseFirmwareQuery(query: readonly string[]): Parsed<FirmwareQuery> {
  const values = new Map<string, string>();
  for (const item of query) {
    const equals = item.indexOf('=');
    if (equals > 0) values.set(item.slice(0, equals), item.slice(equals + 1));
  }
  const count = (name: 'size' | 'chunk'): number | string => {
    const text = values.get(name);
    if (text === undefined || text === '') return 0;
    return /^\d{1,9}$/.test(text) ? Number(text) : `${name} must be a whole number (got "${text}")`;
  };
  const size = count('size');
  const chunk = count('chunk');
  if (typeof size === 'string') return fail(size);
  if (typeof chunk === 'string') return fail(chunk);
  return { ok: true, value: { title: values.get('title'), version: values.get('version'), size, chunk } };
}

function fail<T>(error: string): Parsed<T> {
  return { ok: false, error };
}
