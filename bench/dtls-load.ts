// The DTLS-only measurements: full PSK handshakes back to back (what a fleet reconnecting after a gateway
// restart costs), and sessions held open (what each connected device costs the gateway in memory).
// Each handshake is a client of its own, on a fresh socket: cookie exchange included, no resumption.
import { performance } from 'node:perf_hooks';
import type { DtlsClient } from '../test/helpers/dtls-client.js';
import { connectPsk, summarize, type LatencySummary, type PskCredential } from './loadgen.js';

export interface DtlsLoadOptions {
  readonly host: string;
  readonly port: number;
  /** The credential of the n-th handshake. */
  readonly psk: (handshakeNumber: number) => PskCredential;
  readonly timeoutMs: number;
}

export interface HandshakeResult {
  /** Handshakes completed; each client stops starting new ones after the duration. */
  readonly completed: number;
  /** Completed per second over the whole time until the last client stopped (what a UsageMeter also spans). */
  readonly perSecond: number;
  readonly failed: number;
  /** Failure reasons (the client's error message) and how often each came. */
  readonly failures: Record<string, number>;
  /** First ClientHello to Finished, as the client sees it. */
  readonly latencyMs: LatencySummary;
  readonly cipher: string | null;
}

/** `clients` concurrent loops of connect (full handshake) then close (close_notify, which frees the gateway's session). */
export async function runHandshakes(options: DtlsLoadOptions & { readonly clients: number; readonly durationMs: number }): Promise<HandshakeResult> {
  const { host, port, psk, timeoutMs } = options;
  const startedAt = performance.now();
  const endsAt = startedAt + options.durationMs;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let handshakes = 0;
  let failed = 0;
  let cipher: string | null = null;
  const loop = async (): Promise<void> => {
    while (performance.now() < endsAt) {
      const begun = performance.now();
      let session: DtlsClient;
      try {
        session = await connectPsk(host, port, psk(handshakes + failed), timeoutMs);
      } catch (error) {
        failed++;
        const reason = (error as Error).message;
        failures[reason] = (failures[reason] ?? 0) + 1;
        continue;
      }
      latencies.push(performance.now() - begun);
      handshakes++;
      cipher ??= session.info?.cipher ?? null;
      await session.close();
    }
  };
  await Promise.all(Array.from({ length: options.clients }, loop));
  const seconds = (performance.now() - startedAt) / 1000;
  return {
    completed: handshakes,
    perSecond: handshakes / seconds,
    failed,
    failures,
    latencyMs: summarize(Float64Array.from(latencies)),
    cipher,
  };
}

/** Opens `count` sessions, `concurrency` handshakes at a time, and leaves them open; sessions that failed are counted. */
export async function openSessions(
  options: DtlsLoadOptions & { readonly count: number; readonly concurrency: number },
): Promise<{ readonly sessions: DtlsClient[]; readonly failed: number }> {
  const { host, port, psk, timeoutMs } = options;
  const sessions: DtlsClient[] = [];
  let next = 0;
  let failed = 0;
  const opener = async (): Promise<void> => {
    while (next < options.count) {
      const number = next++;
      try {
        sessions.push(await connectPsk(host, port, psk(number), timeoutMs));
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, opener));
  return { sessions, failed };
}
