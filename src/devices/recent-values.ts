// The last telemetry values of each device and key, for thethings.io's read (GET /v2/things/{token}/
// resources/{key}): ThingsBoard's history is not reachable over the Gateway MQTT API, so the gateway keeps
// a short one itself. Bounded twice: values per key, and series in all (least recently written forgotten).
import { LRUCache } from 'lru-cache';
import type { JsonValue, TelemetryRecord } from '../model.js';

export interface RecentValue {
  readonly ts: number;
  readonly value: JsonValue;
}

export interface RecentValuesQuery {
  readonly limit: number;
  /** Inclusive bounds, milliseconds since 1970. */
  readonly from: number | undefined;
  readonly to: number | undefined;
}

export class RecentValues {
  /** Per "device\0key": values oldest first. */
  private readonly series: LRUCache<string, RecentValue[]>;

  constructor(
    private readonly valuesPerKey: number,
    maxSeries: number,
  ) {
    this.series = new LRUCache({ max: maxSeries });
  }

  /** Remembers the values of accepted telemetry. */
  record(device: string, records: readonly TelemetryRecord[]): void {
    for (const { ts, values } of records) {
      for (const [key, value] of Object.entries(values)) {
        const id = `${device}\0${key}`;
        const list = this.series.get(id) ?? [];
        // Readings usually arrive in order; a late one (from a device's own backlog) is put in its place.
        let at = list.length;
        while (at > 0 && list[at - 1]!.ts > ts) at--;
        list.splice(at, 0, { ts, value });
        if (list.length > this.valuesPerKey) list.splice(0, list.length - this.valuesPerKey);
        this.series.set(id, list);
      }
    }
  }

  /** Newest first, at most `limit`, within [from, to]. */
  read(device: string, key: string, query: RecentValuesQuery): RecentValue[] {
    const list = this.series.peek(`${device}\0${key}`) ?? [];
    const found: RecentValue[] = [];
    for (let i = list.length - 1; i >= 0 && found.length < query.limit; i--) {
      const entry = list[i]!;
      if (query.to !== undefined && entry.ts > query.to) continue;
      if (query.from !== undefined && entry.ts < query.from) break;
      found.push(entry);
    }
    return found;
  }
}
