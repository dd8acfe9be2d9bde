// thethings.io's CoAP payloads (docs/device-api-thethings.md), checked once at the edge and turned into the project's
// records: a write becomes ThingsBoard telemetry and passes the same checks as ThingsBoard JSON.
import type { JsonValue, TelemetryRecord } from '../model.js';
import { isJsonObject } from './json-text.js';
import { parseJson, telemetryFromJson, type Parsed } from './thingsboard-json.js';

/** thethings.io's documented key alphabet (ASCII letters and digits, '.', '-', '_'). */
const THING_KEY = /^[A-Za-z0-9._-]+$/;

const fail = (error: string): { ok: false; error: string } => ({ ok: false, error });

/** `{"activationCode": ".."}` → the code. */
export function parseActivation(body: Buffer): Parsed<string> {
  const json = parseJson(body);
  if (!json.ok) return json;
  const code = isJsonObject(json.value) ? json.value['activationCode'] : undefined;
  if (typeof code !== 'string' || code === '') return fail('expected {"activationCode": "..."}');
  return { ok: true, value: code };
}

/**
 * `{"values":[{"key":"fun","value":"9000","datetime":"20261203120000"}]}` → telemetry, one record per
 * datetime (UTC, YYYYMMDDHHmmss or ISO 8601); values without one get `receivedAt`.
 */
export function parseThingWrite(body: Buffer, receivedAt: number): Parsed<TelemetryRecord[]> {
  const json = parseJson(body);
  if (!json.ok) return json;
  const values = isJsonObject(json.value) ? json.value['values'] : undefined;
  if (!Array.isArray(values) || values.length === 0) return fail('expected {"values":[{"key":"...","value":...}]} with at least one value');
  const byTime = new Map<number, Record<string, JsonValue>>();
  for (const [index, entry] of values.entries()) {
    if (!isJsonObject(entry) || typeof entry['key'] !== 'string' || entry['key'] === '' || !('value' in entry)) {
      return fail(`values[${index}]: expected {"key":"...","value":...}`);
    }
    if (!THING_KEY.test(entry['key'])) return fail(`values[${index}].key may only hold letters, digits, '.', '-' and '_'`);
    let ts = receivedAt;
    if (entry['datetime'] !== undefined) {
      const parsed = parseThingDate(entry['datetime']);
      if (parsed === undefined) return fail(`values[${index}].datetime must be YYYYMMDDHHmmss (UTC) or ISO 8601, not ${JSON.stringify(entry['datetime'])}`);
      ts = parsed;
    }
    const record = byTime.get(ts) ?? {};
    record[entry['key']] = entry['value'] as JsonValue;
    byTime.set(ts, record);
  }
  // ThingsBoard's own checks (key length, nesting, number range) apply to what the values became.
  return telemetryFromJson([...byTime].map(([ts, record]) => ({ ts, values: record })), receivedAt);
}

export interface ResourceQuery {
  /** 1 to 100; 1 when absent or empty. */
  readonly limit: number;
  readonly startDate: number | undefined;
  readonly endDate: number | undefined;
}

export const MAX_READ_LIMIT = 100;

/** `limit`, `startDate`, `endDate` from Uri-Query items. */
export function parseResourceQuery(query: readonly string[]): Parsed<ResourceQuery> {
  const values = new Map<string, string>();
  for (const item of query) {
    const equals = item.indexOf('=');
    if (equals > 0) values.set(item.slice(0, equals), item.slice(equals + 1));
  }
  const limitText = values.get('limit');
  const limit = limitText === undefined || limitText === '' ? 1 : /^\d{1,3}$/.test(limitText) ? Number(limitText) : NaN;
  if (!(limit >= 1 && limit <= MAX_READ_LIMIT)) return fail(`limit must be a whole number from 1 to ${MAX_READ_LIMIT} (got "${limitText}")`);
  const date = (name: 'startDate' | 'endDate'): number | undefined | string => {
    const text = values.get(name);
    if (text === undefined || text === '') return undefined;
    return parseThingDate(text) ?? `${name} must be YYYYMMDDHHmmss (UTC) or ISO 8601 (got "${text}")`;
  };
  const startDate = date('startDate');
  const endDate = date('endDate');
  if (typeof startDate === 'string') return fail(startDate);
  if (typeof endDate === 'string') return fail(endDate);
  return { ok: true, value: { limit, startDate, endDate } };
}

/** thethings.io's compact UTC "YYYYMMDDHHmmss", or an ISO 8601 date; undefined when neither. */
export function parseThingDate(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const compact = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(value);
  if (compact) {
    const [year, month, day, hour, minute, second] = compact.slice(1).map(Number) as [number, number, number, number, number, number];
    const ts = Date.UTC(year, month - 1, day, hour, minute, second);
    // Date.UTC rolls 20261332 over into the next year: only dates that round-trip are real.
    const check = new Date(ts);
    return check.getUTCMonth() === month - 1 && check.getUTCDate() === day && hour < 24 && minute < 60 && second < 60 ? ts : undefined;
  }
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value)) return undefined;
  const ts = Date.parse(value);
  return Number.isNaN(ts) ? undefined : ts;
}
