// Packing uplink items of many devices into as few Gateway API publishes as fit under the broker's size
// limit. Rows are taken strictly in order and a publish is one run of rows of the same kind, so whatever
// order rows arrive in (per device, across kinds) is the order ThingsBoard receives them.
import { frameBytes, topicOf, UplinkKind, type UplinkItem } from './gateway-api.js';

export interface Publish {
  readonly topic: string;
  readonly payload: string;
  /** How many rows, from `start`, the publish carries. */
  readonly rows: number;
  readonly points: number;
}

/** The row at `start` cannot fit in any publish of `maxBytes`. */
export interface Oversized {
  readonly oversized: true;
  readonly bytes: number;
}

/**
 * The next publish from `rows[start..end)`: as many rows as fit within `maxBytes` and `maxPoints` (the first
 * row always goes, if it fits on its own). Telemetry rows share one `{"<device>":[..],..}`; attributes and
 * claims one `{"<device>":{..},..}` with each device once; an RPC reply goes alone.
 */
export function nextPublish(rows: readonly UplinkItem[], start: number, maxBytes: number, maxPoints = Infinity, end = rows.length): Publish | Oversized {
  const first = rows[start]!;
  const firstBytes = frameBytes(first.kind, first.device) + Buffer.byteLength(first.body);
  if (firstBytes > maxBytes) return { oversized: true, bytes: firstBytes };
  if (first.kind === UplinkKind.rpcReply) return { topic: topicOf(first.kind), payload: first.body, rows: 1, points: first.points };

  const byDevice = new Map<string, string[]>();
  let size = 2; // {}
  let points = 0;
  let last = start;
  for (; last < end; last++) {
    const row = rows[last]!;
    if (row.kind !== first.kind) break;
    if (last > start && points + row.points > maxPoints) break;
    const bodyBytes = Buffer.byteLength(row.body);
    const parts = byDevice.get(row.device);
    let added: number;
    if (parts) {
      // Attributes and claims name each device once per message; a repeat starts the next publish.
      if (first.kind !== UplinkKind.telemetry) break;
      added = 1 + bodyBytes;
    } else {
      added = (byDevice.size > 0 ? 1 : 0) + frameBytes(row.kind, row.device) - 2 + bodyBytes;
    }
    if (size + added > maxBytes) break;
    size += added;
    points += row.points;
    if (parts) parts.push(row.body);
    else byDevice.set(row.device, [row.body]);
  }

  const entries: string[] = [];
  for (const [device, parts] of byDevice) {
    entries.push(first.kind === UplinkKind.telemetry ? `${JSON.stringify(device)}:[${parts.join(',')}]` : `${JSON.stringify(device)}:${parts[0]}`);
  }
  return { topic: topicOf(first.kind), payload: `{${entries.join(',')}}`, rows: last - start, points };
}
