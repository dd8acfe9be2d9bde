// What ThingsBoard's MQTT transport accepts from a gateway (docs/thingsboard.md, and the server source it
// was read from: GatewaySessionHandler, JsonConverter). A message that fails here would make the real
// server close the gateway's whole session, so tests check every message the gateway published with it.
import type { Received } from './thingsboard-double.js';

/** Largest payload the server takes by default (docs/thingsboard.md). */
export const MAX_PAYLOAD_BYTES = 65_536;
const INT32_MAX = 2 ** 31 - 1;
const LONG_MAX = 2n ** 63n - 1n;
const LONG_MIN = -(2n ** 63n);

/** Topics only the server publishes (answers the double itself sends are seen on its own subscription). */
const DOWNLINK_ONLY = [/^v1\/gateway\/attributes\/response$/, /^v1\/devices\/me\/rpc\/response\/\d+$/, /^v1\/devices\/me\/attributes(\/response\/\d+)?$/];

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

const isDeviceName = (value: unknown): value is string => typeof value === 'string' && value.trim().length > 0;

/**
 * ThingsBoard's JsonConverter reads a JSON number as a double when its text contains ".", otherwise as a
 * Java long with Long.parseLong, and throws ("Big integer values are not supported!") when that fails:
 * so "1e-7" or "1e+21" or 2^63 close the session. What counts is the number's text as published (the
 * gateway writes 1e-7 as "1.0e-7"), so this takes the text, not the parsed value.
 */
export function thingsBoardNumberProblem(text: string): string | undefined {
  if (text.includes('.')) return undefined;
  if (!/^-?\d+$/.test(text)) return `${text} has no "." and is not a plain integer, so ThingsBoard's Long.parseLong fails`;
  const big = BigInt(text);
  if (big > LONG_MAX || big < LONG_MIN) return `${text} is beyond the 64-bit range ThingsBoard stores`;
  return undefined;
}

/** Key-value pairs as JsonConverter.parseValues takes them; their numbers are checked on the text (numberProblems). */
function keyValueProblems(values: Record<string, unknown>, where: string): string[] {
  const problems: string[] = [];
  for (const key of Object.keys(values)) if (key.length === 0) problems.push(`${where}: empty key`);
  return problems;
}

/**
 * The number tokens of a JSON text as written, at one nesting depth (that of the key-value pairs: nested
 * JSON values are stored as JSON, their numbers not parsed), checked as ThingsBoard reads them.
 */
function numberProblems(text: string, valueDepth: number): string[] {
  const problems: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      continue;
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      const token = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400))![0];
      const problem = depth === valueDepth ? thingsBoardNumberProblem(token) : undefined;
      if (problem) problems.push(`number ${problem}`);
      i += token.length - 1;
    }
  }
  return problems;
}

function isValidUtf8(bytes: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * Problems with one message the gateway published, as the server would see them; [] when it is valid.
 * Messages on server-only topics are not checked (they are the double's own answers).
 */
export function gatewayApiProblems(topic: string, payload: Buffer | string): string[] {
  if (DOWNLINK_ONLY.some((pattern) => pattern.test(topic))) return [];
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (bytes.length > MAX_PAYLOAD_BYTES) return [`${bytes.length} bytes, over the server's ${MAX_PAYLOAD_BYTES}`];
  if (!isValidUtf8(bytes)) return ['payload is not valid UTF-8'];
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    return [`not JSON: ${(error as Error).message}`];
  }
  const problems: string[] = [];
  const check = (ok: boolean, problem: string): void => {
    if (!ok) problems.push(problem);
  };

  switch (true) {
    case topic === 'v1/gateway/connect':
      check(isPlainObject(json) && isDeviceName(json.device), 'connect needs {"device": name}');
      if (isPlainObject(json) && json.type !== undefined) check(typeof json.type === 'string', 'connect "type" must be a string');
      break;
    case topic === 'v1/gateway/disconnect':
      check(isPlainObject(json) && isDeviceName(json.device), 'disconnect needs {"device": name}');
      break;
    case topic === 'v1/gateway/telemetry': {
      // {"device":[{"ts":..,"values":{"key":number}}]}: values at depth 4.
      problems.push(...numberProblems(bytes.toString('utf8'), 4));
      if (!isPlainObject(json) || Object.keys(json).length === 0) {
        problems.push('telemetry must be a non-empty object of device name → records');
        break;
      }
      for (const [device, records] of Object.entries(json)) {
        check(isDeviceName(device), `telemetry device name ${JSON.stringify(device)} is empty`);
        if (!Array.isArray(records) || records.length === 0) {
          problems.push(`telemetry for ${device} must be a non-empty array of {ts, values}`);
          continue;
        }
        records.forEach((record: unknown, i) => {
          const where = `telemetry[${JSON.stringify(device)}][${i}]`;
          if (!isPlainObject(record)) return problems.push(`${where} is not an object`);
          if (!Number.isSafeInteger(record.ts) || (record.ts as number) < 0) problems.push(`${where}.ts ${JSON.stringify(record.ts)} is not a non-negative integer`);
          if (!isPlainObject(record.values)) return problems.push(`${where}.values is not an object`);
          problems.push(...keyValueProblems(record.values, `${where}.values`));
          return undefined;
        });
      }
      break;
    }
    case topic === 'v1/gateway/attributes': {
      // {"device":{"key":number}}: values at depth 2.
      problems.push(...numberProblems(bytes.toString('utf8'), 2));
      if (!isPlainObject(json) || Object.keys(json).length === 0) {
        problems.push('attributes must be a non-empty object of device name → attributes');
        break;
      }
      for (const [device, attributes] of Object.entries(json)) {
        check(isDeviceName(device), `attributes device name ${JSON.stringify(device)} is empty`);
        if (!isPlainObject(attributes)) problems.push(`attributes for ${device} must be an object`);
        else problems.push(...keyValueProblems(attributes, `attributes[${JSON.stringify(device)}]`));
      }
      break;
    }
    case topic === 'v1/gateway/claim': {
      if (!isPlainObject(json) || Object.keys(json).length === 0) {
        problems.push('claim must be a non-empty object of device name → claim');
        break;
      }
      for (const [device, claim] of Object.entries(json)) {
        check(isDeviceName(device), `claim device name ${JSON.stringify(device)} is empty`);
        if (!isPlainObject(claim)) {
          problems.push(`claim for ${device} must be an object`);
          continue;
        }
        if (claim.secretKey !== undefined) check(typeof claim.secretKey === 'string', `claim secretKey for ${device} must be a string`);
        if (claim.durationMs !== undefined) check(Number.isSafeInteger(claim.durationMs), `claim durationMs for ${device} must be an integer`);
      }
      break;
    }
    case topic === 'v1/gateway/rpc':
      // The server reads the id with getAsInt(): a larger id is silently truncated to another RPC's id.
      check(
        isPlainObject(json) && isDeviceName(json.device) && Number.isSafeInteger(json.id) && (json.id as number) >= 0 && (json.id as number) <= INT32_MAX && 'data' in json,
        `an RPC reply needs {"device": name, "id": 0..${INT32_MAX}, "data": ...}, got ${truncate(bytes)}`,
      );
      break;
    case topic === 'v1/gateway/attributes/request': {
      // `keys: []` is accepted: ThingsBoard answers every client and shared attribute, mixed (spec §5).
      const ok =
        isPlainObject(json) &&
        Number.isSafeInteger(json.id) &&
        isDeviceName(json.device) &&
        typeof json.client === 'boolean' &&
        (typeof json.key === 'string') !== Array.isArray(json.keys) &&
        (!Array.isArray(json.keys) || json.keys.every((k) => typeof k === 'string'));
      check(ok, `an attribute request needs {"id", "device", "client": boolean, "key" | "keys"}, got ${truncate(bytes)}`);
      break;
    }
    case /^v1\/devices\/me\/rpc\/request\/\d+$/.test(topic):
      check(isPlainObject(json) && typeof json.method === 'string' && json.method.length > 0 && 'params' in json, `the gateway's own RPC needs {"method", "params"}`);
      break;
    default:
      problems.push(`unexpected topic ${topic}`);
  }
  return problems;
}

function truncate(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** Every problem in `received`, each prefixed with its position and topic. */
export function gatewayApiViolations(received: readonly Received[]): string[] {
  const violations: string[] = [];
  received.forEach((message, index) => {
    for (const problem of gatewayApiProblems(message.topic, message.bytes ?? Buffer.from(message.text))) {
      violations.push(`#${index} ${message.topic}: ${problem}`);
    }
  });
  return violations;
}
