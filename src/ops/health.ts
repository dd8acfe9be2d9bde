// What /healthz answers: is the gateway serving devices, and if so how well.
//
// The rule (docs/health-and-metrics.md): HTTP 200 while devices get their readings accepted, 503 when they do not.
// - The upstream broker down with the outbox on: devices still get 2.01 (readings wait on disk), so 200,
//   with status "degraded" and the reason in `problems`. A liveness probe must not restart a box because
//   ThingsBoard is unreachable; a person or an alert reading the body sees it.
// - 503 when the gateway is stopping, when the broker is down and the outbox is off (devices get 5.03),
//   or when the outbox refuses new readings (disk full, below outbox.minFreeDiskBytes).
// - status: "ok" (connected, accepting), "degraded" (something above is wrong), "starting" (the first
//   connection attempt to the broker is still under way), "stopping".
// Nothing secret goes in: the broker URL without credentials, no tokens, no keys.
import { readFileSync } from 'node:fs';
import type { OutboxStats } from '../outbox/outbox.js';
import type { UpstreamStats } from '../upstream/connection.js';
import { redactUrl } from '../log.js';

export type HealthStatus = 'ok' | 'degraded' | 'starting' | 'stopping';

export interface HealthSources {
  readonly upstream: { stats(): UpstreamStats };
  /** Absent when outbox.enabled is false. */
  readonly outbox: { stats(): OutboxStats; readonly refusing: 'stopping' | 'low-disk' | 'disk-full' | undefined } | undefined;
  /** Devices in the registry now (a reload changes it). */
  readonly devices: () => number;
  /** Observe relations held now, and DTLS sessions (undefined: DTLS off). */
  readonly observations: () => number;
  readonly dtlsSessions: () => number | undefined;
  /** The broker URL (credentials are removed before it is shown). */
  readonly upstreamUrl: string;
  /** When the gateway started, ms since the epoch. */
  readonly startedAt: number;
}

export interface HealthReport {
  readonly status: HealthStatus;
  /** Devices get their readings accepted (2.01) now. */
  readonly ready: boolean;
  /** What is wrong, in a sentence each; empty when status is "ok". */
  readonly problems: readonly string[];
  readonly version: string;
  readonly uptimeSeconds: number;
  readonly devices: number;
  readonly upstream: {
    readonly connected: boolean;
    /** ISO time the connection came up or went down (before the first connection: when connecting began). */
    readonly since?: string;
    readonly url: string;
    readonly reconnects: number;
    readonly lastFailure?: string;
  };
  readonly outbox: {
    readonly enabled: boolean;
    readonly records: number;
    readonly bytes: number;
    /** 0 when empty. */
    readonly oldestAgeSeconds: number;
    /** Why new readings are refused (5.03), when they are. */
    readonly refusing?: string;
  };
  readonly coap: { readonly observations: number; readonly dtlsSessions?: number };
}

export const VERSION = readVersion();

const REFUSING: Record<'stopping' | 'low-disk' | 'disk-full', string> = {
  stopping: 'the gateway is shutting down',
  'low-disk': 'the disk is nearly full (below outbox.minFreeDiskBytes)',
  'disk-full': 'the disk is full: the last write to the outbox failed',
};

export function healthReport(sources: HealthSources, stopping: boolean, now = Date.now()): { readonly httpStatus: 200 | 503; readonly body: HealthReport } {
  const upstream = sources.upstream.stats();
  const outbox = sources.outbox?.stats();
  const refusing = sources.outbox?.refusing;
  const problems: string[] = [];
  const since = upstream.since === undefined ? undefined : new Date(upstream.since).toISOString();
  const firstAttempt = !upstream.connected && upstream.connects === 0 && upstream.failedAttempts === 0;
  if (!upstream.connected && !firstAttempt && !stopping) {
    const why = upstream.lastFailure ? ` (${upstream.lastFailure})` : '';
    problems.push(
      `not connected to the upstream broker${why}${upstream.connects > 0 ? ` since ${since}` : ''}; ${
        sources.outbox ? 'readings wait in the outbox' : 'devices are answered 5.03 (outbox.enabled is false)'
      }`,
    );
  }
  if (refusing !== undefined && refusing !== 'stopping') problems.push(`the outbox refuses new readings (5.03): ${REFUSING[refusing]}`);

  const accepting = sources.outbox ? refusing === undefined : upstream.connected;
  const ready = !stopping && accepting;
  let status: HealthStatus;
  if (stopping) status = 'stopping';
  else if (firstAttempt && refusing === undefined) status = 'starting';
  else status = problems.length === 0 ? 'ok' : 'degraded';

  const observations = sources.observations();
  const dtlsSessions = sources.dtlsSessions();
  return {
    httpStatus: ready ? 200 : 503,
    body: {
      status,
      ready,
      problems,
      version: VERSION,
      uptimeSeconds: Math.max(0, Math.round((now - sources.startedAt) / 1000)),
      devices: sources.devices(),
      upstream: {
        connected: upstream.connected,
        ...(since === undefined ? {} : { since }),
        url: redactUrl(sources.upstreamUrl),
        reconnects: Math.max(0, upstream.connects - 1),
        ...(upstream.lastFailure === undefined ? {} : { lastFailure: upstream.lastFailure }),
      },
      outbox: {
        enabled: outbox !== undefined,
        records: outbox?.records ?? 0,
        bytes: outbox?.bytes ?? 0,
        oldestAgeSeconds: outbox?.oldestAgeMs === undefined ? 0 : Math.round(outbox.oldestAgeMs / 100) / 10,
        ...(refusing === undefined ? {} : { refusing: REFUSING[refusing] }),
      },
      coap: { observations, ...(dtlsSessions === undefined ? {} : { dtlsSessions }) },
    },
  };
}

function readVersion(): string {
  try {
    // dist/ops/ and src/ops/ alike sit two levels below package.json.
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
