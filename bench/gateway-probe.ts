// Loaded into a gateway the bench starts (node --expose-gc --import <this file> dist/cli.js): on SIGUSR2 it
// collects garbage and prints one line of memory figures to stdout, so the harness reads the heap after a
// full GC rather than whenever V8 last ran one. The gateway itself is not changed: nothing in src/ knows.
import { performance } from 'node:perf_hooks';

export interface ProbeSample {
  readonly rssBytes: number;
  /** V8 heap in use, and as committed (heapTotal: young-generation growth shows here). */
  readonly heapUsedBytes: number;
  readonly heapTotalBytes: number;
  /** Memory outside V8's heap held by JS objects (Buffers: arrayBuffers is part of it). */
  readonly externalBytes: number;
  readonly arrayBuffersBytes: number;
  /** Live timers and TCP handles (connections and listeners), from process.getActiveResourcesInfo(). */
  readonly timers: number;
  readonly tcpHandles: number;
  /** How long the two collections took, ms. */
  readonly gcMs: number;
}

async function sample(): Promise<ProbeSample> {
  const collect = (globalThis as { gc?: () => void }).gc;
  const startedAt = performance.now();
  if (collect) {
    // Twice, a turn apart: the first lets finalizers and weak callbacks run, the second collects what they freed.
    collect();
    await new Promise((resolve) => setImmediate(resolve));
    collect();
  }
  const gcMs = performance.now() - startedAt;
  const memory = process.memoryUsage();
  const resources = process.getActiveResourcesInfo();
  return {
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    externalBytes: memory.external,
    arrayBuffersBytes: memory.arrayBuffers,
    timers: resources.filter((name) => name === 'Timeout').length,
    tcpHandles: resources.filter((name) => name === 'TCPSocketWrap' || name === 'TCPServerWrap').length,
    gcMs,
  };
}

// The signal and the line's prefix are mqtt-devices.ts's PROBE_SIGNAL and PROBE_LINE (this file is only ever
// preloaded, never imported, so it installs its handler unconditionally).
process.on('SIGUSR2', () => {
  void sample().then((figures) => process.stdout.write(`bench-probe ${JSON.stringify(figures)}\n`));
});
