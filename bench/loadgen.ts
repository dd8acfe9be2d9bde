// A lean CoAP load generator: hand-built CON POSTs to /api/v1/{token}/telemetry (or, over DTLS, the
// token-less /api/v1/telemetry), no CoAP library on the hot path. Requests are spread over many links
// (connected UDP sockets, or DTLS sessions each on its own socket) because a server deduplicates by
// (source, message id) and one source may use each of its 65,536 ids once per EXCHANGE_LIFETIME.
// Nothing is retransmitted: a request unanswered within the timeout counts as lost.
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { NativeContext } from '../src/dtls/native.js';
import { DtlsClient } from '../test/helpers/dtls-client.js';

export interface GeneratorOptions {
  readonly host: string;
  readonly port: number;
  /** Links kept open at once: UDP sockets, or DTLS sessions. */
  readonly sockets: number;
  /** Plain CoAP: requests cycle through the device tokens tok-0 … tok-(devices-1). */
  readonly devices: number;
  /** Send over DTLS instead: each session is one PSK device, which the token-less path relies on. */
  readonly dtls?: DtlsLinkOptions;
}

export interface PskCredential {
  readonly identity: string;
  readonly key: Buffer;
}

export interface DtlsLinkOptions {
  /** The credential of the n-th session opened (replacements included). */
  readonly psk: (sessionNumber: number) => PskCredential;
  readonly handshakeTimeoutMs: number;
}

/** RFC 7252's mandatory PSK suite, named alone so every figure is for the same one. */
export const DTLS_PSK_CIPHER = 'PSK-AES128-CCM8';

/** Where requests go out and answers come back in plaintext. */
export interface Link {
  send(datagram: Buffer): void;
  close(): Promise<void>;
}

/** Opens one link; `receive` gets every datagram from the target, `failed` hears of socket or session errors. */
export type LinkOpener = (receive: (datagram: Buffer) => void, failed: () => void) => Promise<Link>;

export type LoadMode = { readonly kind: 'saturation'; readonly window: number } | { readonly kind: 'rate'; readonly perSecond: number };

export interface RunOptions {
  readonly mode: LoadMode;
  readonly durationMs: number;
  readonly timeoutMs: number;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

export interface RunResult {
  readonly sent: number;
  /** Requests answered (any code) before the measured period ended, per second. */
  readonly throughput: number;
  readonly codes: Record<string, number>;
  readonly lost: number;
  /** Answers that came after their request had been counted lost, or duplicates. */
  readonly late: number;
  /** Empty ACKs: the answer follows as a separate CON response. */
  readonly emptyAcks: number;
  readonly separateResponses: number;
  readonly resets: number;
  /** Sends skipped because every request slot was in use (fixed rate only: the target fell far behind). */
  readonly skipped: number;
  /** Socket errors, e.g. ICMP port unreachable once the target has gone. */
  readonly socketErrors: number;
  readonly latencyMs: LatencySummary;
}

export interface IntervalReport {
  readonly answered: number;
  readonly lost: number;
  readonly latencyMs: LatencySummary;
}

// The token carries the request slot (16 bits) and the slot's generation (16 bits), so an answer finds
// its request without a map, and a late answer to a slot since reused is recognised as such.
const SLOTS = 65536;
const TOKEN_LENGTH = 4;
const TYPE_CON = 0;
const TYPE_ACK = 2;
const TYPE_RST = 3;
const SWEEP_INTERVAL_MS = 100;
const SUCCESSOR_LEAD = 4096;
const PAYLOAD = '{"temperature":21.5,"humidity":48.2,"battery":97}';

interface ClientLink {
  link: Link;
  nextMessageId: number;
  idsLeft: number;
  successor: ClientLink | undefined;
}

/** One pool of links per target, reused by successive runs so no (source, message id) pair repeats. */
export class LoadGenerator {
  private readonly active: ClientLink[] = [];
  private readonly retired: ClientLink[] = [];
  private readonly templates: Buffer[];
  private readonly openTransport: LinkOpener;
  private socketCursor = 0;
  private deviceCursor = 0;

  private readonly sentAt = new Float64Array(SLOTS);
  private readonly generation = new Uint16Array(SLOTS);
  private readonly busy = new Uint8Array(SLOTS);
  private readonly freeSlots = new Int32Array(SLOTS);
  private freeCount = 0;
  private outstanding = 0;

  private run: RunState | undefined;
  /** The current or last run, for takeInterval() after the run has ended. */
  private lastRun: RunState | undefined;
  private closed = false;

  private constructor(options: GeneratorOptions) {
    const { host, port, dtls } = options;
    this.templates = dtls
      ? [requestTemplate(['api', 'v1', 'telemetry'])]
      : Array.from({ length: options.devices }, (_, device) => requestTemplate(['api', 'v1', `tok-${device}`, 'telemetry']));
    this.openTransport = dtls ? dtlsLinks(host, port, dtls) : udpLinks(host, port);
  }

  static async open(options: GeneratorOptions): Promise<LoadGenerator> {
    const generator = new LoadGenerator(options);
    try {
      generator.active.push(...(await Promise.all(Array.from({ length: options.sockets }, () => generator.openLink()))));
    } catch (error) {
      // A handshake failed: the sessions that did open must not keep the harness alive.
      await generator.close();
      throw error;
    }
    return generator;
  }

  /** One measured run; answers still outstanding at the end are awaited up to the timeout. */
  async runLoad(options: RunOptions): Promise<RunResult> {
    this.resetSlots();
    const run = new RunState(options);
    this.run = run;
    this.lastRun = run;
    const sweeper = setInterval(() => this.sweep(performance.now() - options.timeoutMs), SWEEP_INTERVAL_MS);
    const { mode } = options;
    let pacer: NodeJS.Timeout | undefined;
    if (mode.kind === 'saturation') {
      for (let i = 0; i < mode.window; i++) this.send();
    } else {
      // Open loop: sends follow the clock, never the answers, so a slow target cannot slow the load.
      pacer = setInterval(() => {
        const due = Math.floor(((performance.now() - run.startedAt) * mode.perSecond) / 1000);
        while (run.sent + run.skipped < due) this.send();
      }, 1);
    }
    await sleep(options.durationMs);
    clearInterval(pacer);
    run.measuring = false;
    const throughput = (run.answeredInPeriod * 1000) / (performance.now() - run.startedAt);
    const drainDeadline = performance.now() + options.timeoutMs + 2 * SWEEP_INTERVAL_MS;
    while (this.outstanding > 0 && performance.now() < drainDeadline) await sleep(20);
    clearInterval(sweeper);
    this.sweep(Infinity);
    this.run = undefined;
    return run.result(throughput);
  }

  /** Answers and losses since the previous call, for progress lines during long runs. */
  takeInterval(): IntervalReport {
    return this.lastRun?.takeInterval() ?? { answered: 0, lost: 0, latencyMs: summarize(new Float64Array(0)) };
  }

  async close(): Promise<void> {
    this.closed = true;
    const successors = this.active.flatMap((client) => (client.successor ? [client.successor] : []));
    const all = [...this.active.splice(0), ...this.retired.splice(0), ...successors];
    await Promise.all(all.map((client) => client.link.close()));
  }

  private async openLink(): Promise<ClientLink> {
    const client: ClientLink = { link: undefined!, nextMessageId: randomInt(0x10000), idsLeft: 0x10000, successor: undefined };
    client.link = await this.openTransport(
      (datagram) => this.receive(datagram, client.link),
      () => {
        if (this.run) this.run.socketErrors++;
      },
    );
    return client;
  }

  private send(): void {
    const run = this.run!;
    if (this.freeCount === 0) {
      run.skipped++;
      return;
    }
    const slot = this.freeSlots[--this.freeCount]!;
    const generation = (this.generation[slot]! + 1) & 0xffff;
    this.generation[slot] = generation;

    const client = this.nextLink();
    const template = this.templates[this.deviceCursor]!;
    this.deviceCursor = (this.deviceCursor + 1) % this.templates.length;
    const datagram = Buffer.allocUnsafe(template.length);
    template.copy(datagram);
    datagram.writeUInt16BE(client.nextMessageId, 2);
    datagram.writeUInt16BE(slot, 4);
    datagram.writeUInt16BE(generation, 6);
    client.nextMessageId = (client.nextMessageId + 1) & 0xffff;

    this.busy[slot] = 1;
    this.outstanding++;
    run.sent++;
    this.sentAt[slot] = performance.now();
    client.link.send(datagram);
  }

  private nextLink(): ClientLink {
    const index = this.socketCursor;
    this.socketCursor = (index + 1) % this.active.length;
    const client = this.active[index]!;
    client.idsLeft--;
    if (client.idsLeft === SUCCESSOR_LEAD) {
      // Open the replacement well before the last id: connecting (or a handshake) is asynchronous.
      void this.openLink().then(
        (fresh) => {
          if (this.closed) void fresh.link.close();
          else client.successor = fresh;
        },
        () => undefined, // noticed below when the ids run out
      );
    } else if (client.idsLeft === 0) {
      if (!client.successor) throw new Error('load generator: a replacement socket or session did not open in time');
      this.active[index] = client.successor;
      // Kept open until close(): late answers still arrive, and its port is not handed out again.
      this.retired.push(client);
    }
    return client;
  }

  private receive(datagram: Buffer, link: Link): void {
    const run = this.run;
    if (!run || datagram.length < 4) return;
    const type = (datagram[0]! >> 4) & 3;
    const code = datagram[1]!;
    if (type === TYPE_RST) {
      run.resets++;
      return;
    }
    if (code === 0) {
      if (type === TYPE_ACK) run.emptyAcks++;
      return;
    }
    if (type === TYPE_CON) {
      // A separate response: acknowledge it (same message id) or the server keeps retransmitting it.
      link.send(Buffer.from([0x60, 0, datagram[2]!, datagram[3]!]));
      run.separateResponses++;
    }
    if ((datagram[0]! & 0x0f) !== TOKEN_LENGTH || datagram.length < 4 + TOKEN_LENGTH) {
      run.late++;
      return;
    }
    const slot = datagram.readUInt16BE(4);
    if (this.busy[slot] === 0 || this.generation[slot] !== datagram.readUInt16BE(6)) {
      run.late++;
      return;
    }
    this.release(slot);
    run.answered(code, performance.now() - this.sentAt[slot]!);
    if (run.measuring && run.options.mode.kind === 'saturation') this.send();
  }

  /** Counts requests sent before `cutoff` (performance.now() time) as lost. */
  private sweep(cutoff: number): void {
    const run = this.run;
    if (!run || this.outstanding === 0) return;
    for (let slot = 0; slot < SLOTS; slot++) {
      if (this.busy[slot] === 1 && this.sentAt[slot]! < cutoff) {
        this.release(slot);
        run.lost++;
        if (run.measuring && run.options.mode.kind === 'saturation') this.send();
      }
    }
  }

  private release(slot: number): void {
    this.busy[slot] = 0;
    this.outstanding--;
    this.freeSlots[this.freeCount++] = slot;
  }

  private resetSlots(): void {
    this.busy.fill(0);
    this.outstanding = 0;
    this.freeCount = SLOTS;
    for (let i = 0; i < SLOTS; i++) this.freeSlots[i] = SLOTS - 1 - i;
  }
}

class RunState {
  readonly startedAt = performance.now();
  measuring = true;
  sent = 0;
  skipped = 0;
  answeredInPeriod = 0;
  lost = 0;
  late = 0;
  emptyAcks = 0;
  separateResponses = 0;
  resets = 0;
  socketErrors = 0;
  private readonly codes = new Uint32Array(256);
  private latencies = new Float64Array(1 << 16);
  private latencyCount = 0;
  private intervalStart = 0;
  private lostAtIntervalStart = 0;

  constructor(readonly options: RunOptions) {}

  answered(code: number, latencyMs: number): void {
    this.codes[code]!++;
    if (this.measuring) this.answeredInPeriod++;
    if (this.latencyCount === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.latencyCount++] = latencyMs;
  }

  takeInterval(): IntervalReport {
    const report = {
      answered: this.latencyCount - this.intervalStart,
      lost: this.lost - this.lostAtIntervalStart,
      latencyMs: summarize(this.latencies.slice(this.intervalStart, this.latencyCount)),
    };
    this.intervalStart = this.latencyCount;
    this.lostAtIntervalStart = this.lost;
    return report;
  }

  result(throughput: number): RunResult {
    const codes: Record<string, number> = {};
    this.codes.forEach((count, code) => {
      if (count > 0) codes[`${code >> 5}.${String(code & 31).padStart(2, '0')}`] = count;
    });
    return {
      sent: this.sent,
      throughput,
      codes,
      lost: this.lost,
      late: this.late,
      emptyAcks: this.emptyAcks,
      separateResponses: this.separateResponses,
      resets: this.resets,
      skipped: this.skipped,
      socketErrors: this.socketErrors,
      latencyMs: summarize(this.latencies.slice(0, this.latencyCount)),
    };
  }
}

/** Sorts in place. */
export function summarize(latencies: Float64Array): LatencySummary {
  latencies.sort();
  const count = latencies.length;
  const at = (quantile: number): number => (count === 0 ? NaN : latencies[Math.max(0, Math.ceil(quantile * count) - 1)]!);
  return { count, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: at(1) };
}

/** CON POST to `uriPath`, Content-Format 50 (JSON); message id and token are patched per send. */
function requestTemplate(uriPath: readonly string[]): Buffer {
  const header = [0x40 | TOKEN_LENGTH, 0x02, 0, 0, 0, 0, 0, 0];
  const path = uriPath.map((segment) => Buffer.from(segment));
  const options: number[] = [];
  path.forEach((segment, index) => {
    if (segment.length > 12) throw new Error(`path segment "${segment}" too long for this template`);
    // Uri-Path is option 11: the first has delta 11, the rest delta 0.
    options.push(((index === 0 ? 11 : 0) << 4) | segment.length, ...segment);
  });
  options.push((1 << 4) | 1, 50); // Content-Format (12): delta 1, one byte, application/json
  return Buffer.concat([Buffer.from(header), Buffer.from(options), Buffer.from([0xff]), Buffer.from(PAYLOAD)]);
}

/** Connected UDP sockets: plain CoAP. */
function udpLinks(host: string, port: number): LinkOpener {
  return async (receive, failed) => {
    const udp = dgram.createSocket('udp4');
    udp.on('message', (datagram) => receive(datagram));
    udp.on('error', failed);
    // A connected socket skips the address lookup on every send.
    await new Promise<void>((resolve) => udp.connect(port, host, resolve));
    udp.setRecvBufferSize(4 << 20);
    udp.setSendBufferSize(4 << 20);
    return {
      send: (datagram) => udp.send(datagram),
      close: () => new Promise<void>((resolve) => udp.close(() => resolve())),
    };
  };
}

/** DTLS sessions, one UDP socket each: the same requests, encrypted, to the gateway's DTLS port. */
function dtlsLinks(host: string, port: number, options: DtlsLinkOptions): LinkOpener {
  let opened = 0;
  return async (receive, failed) => {
    const client = await connectPsk(host, port, options.psk(opened++), options.handshakeTimeoutMs);
    client.onData(receive);
    return {
      send: (datagram) => {
        // The session can fail or be closed by the gateway; sending on it then throws.
        try {
          client.send(datagram);
        } catch {
          failed();
        }
      },
      close: () => client.close(),
    };
  };
}

/** One full PSK handshake (cookie exchange included); rejects on failure or after `timeoutMs`. */
export function connectPsk(host: string, port: number, psk: PskCredential, timeoutMs: number): Promise<DtlsClient> {
  // One client context for every simulated device (each session carries its own PSK): creating a context
  // costs ~150 µs, which would otherwise be the load generator's bottleneck in the handshake phase.
  sharedClientContext ??= DtlsClient.context({ ciphers: DTLS_PSK_CIPHER });
  return DtlsClient.connect(
    { host, port, pskIdentity: psk.identity, pskKey: psk.key, ciphers: DTLS_PSK_CIPHER, context: sharedClientContext, keepReceived: false },
    timeoutMs,
  );
}

let sharedClientContext: NativeContext | undefined;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
