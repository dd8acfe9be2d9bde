// How fast the running gateway writes to storage, for doctor: two readings of its write counter a few
// seconds apart. The counter comes from /proc/PID/io when doctor may read it (same user, or root), else
// from the gateway's own /metrics (coap2mqtt_process_written_bytes_total), which any local user may ask.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { parseWriteBytes } from './process-io.js';

export interface WriteCount {
  /** Bytes written since the process started. */
  readonly bytes: number;
  /** When the process started (ms since the epoch), if known. */
  readonly startedAt: number | undefined;
}

export interface WriteCounter {
  /** Where the count comes from, for the report: "/proc/812/io", "http://127.0.0.1:9464/metrics". */
  readonly source: string;
  /** The count now; a string says why it cannot be read. */
  read(): Promise<WriteCount | string>;
}

export interface WriteRate {
  readonly source: string;
  readonly bytesPerSecond: number;
  readonly totalBytes: number;
  readonly startedAt: number | undefined;
}

/** Linux's USER_HZ, the unit of /proc/PID/stat's start time: 100 on every architecture it runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

export function procWriteCounter(pid: number, procRoot = '/proc'): WriteCounter {
  const file = `${procRoot}/${pid}/io`;
  return {
    source: file,
    read: () => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        return Promise.resolve(code === 'EACCES' || code === 'EPERM' ? `${file} is the service's own (run doctor with sudo to read it)` : `cannot read ${file}: ${(error as Error).message}`);
      }
      const bytes = parseWriteBytes(text);
      if (bytes === undefined) return Promise.resolve(`${file} has no write_bytes line`);
      return Promise.resolve({ bytes, startedAt: processStart(pid, procRoot) });
    },
  };
}

/** When process pid started: its start in clock ticks after boot (stat field 22), against the uptime now. */
function processStart(pid: number, procRoot: string): number | undefined {
  try {
    const stat = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const startTicks = Number(fields[19]);
    const uptimeSeconds = Number(readFileSync(`${procRoot}/uptime`, 'utf8').split(' ')[0]);
    if (!Number.isFinite(startTicks) || !Number.isFinite(uptimeSeconds)) return undefined;
    return Date.now() - (uptimeSeconds - startTicks / CLOCK_TICKS_PER_SECOND) * 1000;
  } catch {
    return undefined;
  }
}

const METRICS_TIMEOUT_MS = 3000;
/** The exposition is some tens of KiB; a server sending far more is not a coap2mqtt. */
const METRICS_MAX_BYTES = 1 << 20;

export function metricsWriteCounter(host: string, port: number): WriteCounter {
  const shownHost = host.includes(':') ? `[${host}]` : host;
  const source = `http://${shownHost}:${port}/metrics`;
  return {
    source,
    read: async () => {
      const answer = await getText(host, port, '/metrics');
      if (typeof answer === 'string') return `${source}: ${answer}`;
      if (answer.status !== 200) return `${source} answers ${answer.status}`;
      return parseWriteCount(answer.body) ?? `${source} has no coap2mqtt_process_written_bytes_total (a coap2mqtt older than this one, or not on Linux)`;
    },
  };
}

/** The write count in a Prometheus text exposition of coap2mqtt's /metrics. */
export function parseWriteCount(exposition: string): WriteCount | undefined {
  const sample = (name: string): number | undefined => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(exposition);
    const value = match ? Number(match[1]) : Number.NaN;
    return Number.isFinite(value) ? value : undefined;
  };
  const bytes = sample('coap2mqtt_process_written_bytes_total');
  if (bytes === undefined) return undefined;
  const started = sample('process_start_time_seconds');
  return { bytes, startedAt: started === undefined ? undefined : started * 1000 };
}

function getText(host: string, port: number, path: string): Promise<{ status: number; body: string } | string> {
  return new Promise((done) => {
    // agent: false: one request, no kept-alive socket to outlive it.
    const request = http.get({ host, port, path, timeout: METRICS_TIMEOUT_MS, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
        if (body.length > METRICS_MAX_BYTES) request.destroy(new Error('answer too large'));
      });
      response.on('end', () => done({ status: response.statusCode ?? 0, body }));
      response.on('error', (error) => done(error.message));
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${METRICS_TIMEOUT_MS} ms`)));
    request.on('error', (error: NodeJS.ErrnoException) => done(error.code === 'ECONNREFUSED' ? 'connection refused' : error.message));
  });
}

/**
 * Reads the first counter that answers, waits `intervalMs`, reads it again. Each reason a counter could
 * not be read is kept, for a technician to act on when none could.
 */
export async function measureWriteRate(counters: readonly WriteCounter[], intervalMs: number): Promise<WriteRate | { readonly unknown: readonly string[] }> {
  const reasons: string[] = [];
  for (const counter of counters) {
    const first = await counter.read();
    if (typeof first === 'string') {
      reasons.push(first);
      continue;
    }
    // Monotonic: a clock step (NTP on a Pi that booted without one) must not turn into a rate.
    const firstAt = performance.now();
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    const second = await counter.read();
    if (typeof second === 'string') {
      reasons.push(second);
      continue;
    }
    const seconds = (performance.now() - firstAt) / 1000;
    return {
      source: counter.source,
      // A counter that went back means the gateway restarted between the readings: its new count is all there is.
      bytesPerSecond: Math.max(0, second.bytes - first.bytes) / seconds,
      totalBytes: second.bytes,
      startedAt: second.startedAt,
    };
  }
  return { unknown: reasons };
}
