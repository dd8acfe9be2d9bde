// Devices that must get every reading through: each "lane" is one UDP socket sending one confirmable POST
// at a time (NSTART = 1, as RFC 7252 §4.7 asks of a device), retrying each reading until the gateway
// answers 2.01. On 5.03/4.29 it waits Max-Age (capped, so tests stay short); without an answer it
// retransmits the same message id a few times, then tries again with a new one, as firmware does after a
// gateway reboot. A separate response (empty ACK first) is awaited and acknowledged.
//
// Every reading n is unique ({"n": n} by default) and belongs to lane n % lanes, whose device is
// devices[lane % devices.length]. Events are stamped with one logical clock so upstream order can be
// compared with what the devices knew when they sent.
import dgram from 'node:dgram';
import * as coapPacket from 'coap-packet';
import type { Device } from './gateway-process.js';
import type { Received } from './thingsboard-double.js';

export interface ReadingRecord {
  readonly n: number;
  readonly lane: number;
  readonly device: string;
  /** Logical time of the first transmission; undefined until sent. */
  firstSentAt: number | undefined;
  /** Logical time the 2.01 arrived; undefined until acknowledged. */
  ackedAt: number | undefined;
  /** Fresh message ids used (1 + retries after no answer or 5.03). */
  attempts: number;
  /** The code of the last answer, if any came. */
  lastAnswer: string | undefined;
  /** Tries that got no answer at all (their fate is unknown to the device). */
  unanswered: number;
}

export interface SenderOptions {
  readonly port: number;
  readonly host?: string;
  readonly devices: readonly Device[];
  /** Readings numbered 0..readings-1. */
  readonly readings: number;
  /** Sockets, each with one request outstanding. */
  readonly lanes: number;
  /** Body of reading n; `{"n":n}` by default. */
  readonly payload?: (n: number) => string;
  /** Wait for an ACK before retransmitting (doubles per retransmission). */
  readonly ackTimeoutMs?: number;
  /** Retransmissions of one message id before a fresh one. */
  readonly maxRetransmits?: number;
  /** After an empty ACK, how long to wait for the separate response before trying afresh. */
  readonly separateResponseTimeoutMs?: number;
  /** Cap on the Max-Age wait after 5.03/4.29 (real devices wait the full Max-Age). */
  readonly maxBackoffMs?: number;
  /** Pause of each lane between one acknowledged reading and its next (a steady rate instead of a flood). */
  readonly paceMs?: number;
}

export interface SenderStats {
  datagrams: number;
  retransmissions: number;
  freshRetries: number;
  emptyAcks: number;
  separateResponses: number;
  /** Answers by code (2.01, 5.03, ...), counting every answer, not only final ones. */
  readonly codes: Map<string, number>;
  /** Distinct 5.03/4.29 diagnostic payloads seen, with counts. */
  readonly diagnostics: Map<string, number>;
}

export interface SendPhaseOptions {
  /** Fail the phase after this long. */
  readonly deadlineMs?: number;
  /** Fail the phase at once when an answer matches (e.g. a 5.03 where the outbox should accept). */
  readonly refuse?: (code: string, payload: string) => boolean;
  /** Stop the phase (resolving) once this returns true; lanes finish their current reading first. */
  readonly until?: () => boolean;
  /**
   * Stop the phase at the first answer that matches (e.g. 5.03 "storage full"); the reading so answered
   * stays unacknowledged, and every lane stops after its current exchange.
   */
  readonly stopOn?: (code: string, payload: string) => boolean;
  /** Give a reading up (unacknowledged) after this many answered tries; by default never. */
  readonly answeredTriesPerReading?: number;
}

export interface PhaseResult {
  /** The answer that stopped the phase (stopOn), if one did. */
  readonly stoppedBy?: { readonly n: number; readonly code: string; readonly payload: string; readonly maxAge: number | undefined };
}

interface PhaseControl {
  failure: Error | undefined;
  stoppedBy: PhaseResult['stoppedBy'];
}

interface Answer {
  readonly code: string;
  readonly payload: string;
  readonly maxAge: number | undefined;
}

const UNAVAILABLE = new Set(['5.03', '4.29']);

class Lane {
  readonly socket: dgram.Socket;
  private listener: ((packet: coapPacket.ParsedPacket) => void) | undefined;
  nextMessageId: number;
  tokenCounter = 0;

  constructor(
    readonly index: number,
    readonly device: Device,
    private readonly sender: ReadingSender,
  ) {
    this.socket = dgram.createSocket('udp4');
    this.socket.on('error', () => {});
    this.nextMessageId = (index * 2000 + 1) & 0xffff;
    this.socket.on('message', (datagram) => {
      let packet: coapPacket.ParsedPacket;
      try {
        packet = coapPacket.parse(datagram);
      } catch {
        return;
      }
      // A CON from the gateway (a separate response) is acknowledged whatever it answers, even a stale one.
      if (packet.confirmable) this.send(coapPacket.generate({ code: '0.00', ack: true, messageId: packet.messageId, token: Buffer.alloc(0) }));
      this.listener?.(packet);
    });
  }

  send(datagram: Buffer): void {
    this.sender.stats.datagrams++;
    this.socket.send(datagram, this.sender.options.port, this.sender.options.host ?? '127.0.0.1');
  }

  /**
   * One request with retransmissions: the answer, or undefined when none came (gateway gone or deaf).
   * `tokens` holds the tokens of every earlier try of this reading: a late answer to one counts too.
   */
  exchange(datagram: Buffer, messageId: number, tokens: Set<string>): Promise<Answer | undefined> {
    const { ackTimeoutMs = 300, maxRetransmits = 2, separateResponseTimeoutMs = 3000 } = this.sender.options;
    return new Promise((resolve) => {
      let retransmits = 0;
      let timer: NodeJS.Timeout;
      const finish = (answer: Answer | undefined): void => {
        clearTimeout(timer);
        this.listener = undefined;
        resolve(answer);
      };
      const arm = (ms: number, onTimeout: () => void): void => {
        clearTimeout(timer);
        timer = setTimeout(onTimeout, ms);
      };
      const retransmit = (): void => {
        if (retransmits >= maxRetransmits) return finish(undefined);
        retransmits++;
        this.sender.stats.retransmissions++;
        this.send(datagram);
        arm(ackTimeoutMs * 2 ** retransmits, retransmit);
      };
      this.listener = (packet) => {
        const token = packet.token.toString('hex');
        if (packet.ack && packet.messageId === messageId && packet.code === '0.00') {
          this.sender.stats.emptyAcks++;
          arm(separateResponseTimeoutMs, () => finish(undefined));
          return;
        }
        if (packet.code === '0.00' || packet.reset || !tokens.has(token)) return;
        if (!packet.ack) this.sender.stats.separateResponses++;
        const maxAgeOption = packet.options.find((o) => o.name === 'Max-Age');
        let maxAge: number | undefined;
        if (maxAgeOption) maxAge = maxAgeOption.value.reduce((acc, byte) => acc * 256 + byte, 0);
        finish({ code: packet.code, payload: packet.payload.toString(), maxAge });
      };
      this.send(datagram);
      arm(ackTimeoutMs, retransmit);
    });
  }

  close(): void {
    this.listener = undefined;
    this.socket.close();
  }
}

export class ReadingSender {
  readonly readings: ReadingRecord[];
  readonly stats: SenderStats = {
    datagrams: 0,
    retransmissions: 0,
    freshRetries: 0,
    emptyAcks: 0,
    separateResponses: 0,
    codes: new Map(),
    diagnostics: new Map(),
  };
  private clock = 0;
  private readonly lanes: Lane[];
  private closed = false;
  private ackedCount = 0;
  private readonly ackListeners: Array<(reading: ReadingRecord) => void> = [];

  private constructor(readonly options: SenderOptions) {
    this.lanes = Array.from({ length: options.lanes }, (_, i) => new Lane(i, options.devices[i % options.devices.length]!, this));
    this.readings = Array.from({ length: options.readings }, (_, n) => ({
      n,
      lane: n % options.lanes,
      device: this.lanes[n % options.lanes]!.device.name,
      firstSentAt: undefined,
      ackedAt: undefined,
      attempts: 0,
      lastAnswer: undefined,
      unanswered: 0,
    }));
  }

  static async open(options: SenderOptions): Promise<ReadingSender> {
    const sender = new ReadingSender(options);
    await Promise.all(sender.lanes.map((lane) => new Promise<void>((resolve) => lane.socket.bind(0, '127.0.0.1', resolve))));
    return sender;
  }

  /** Readings acknowledged 2.01 so far. */
  get acked(): number {
    return this.ackedCount;
  }

  /** Logical time now (every send and acknowledgement advances it). */
  now(): number {
    return this.clock;
  }

  onAck(listener: (reading: ReadingRecord) => void): void {
    this.ackListeners.push(listener);
  }

  /**
   * Sends readings from..to-1 (each lane its own, in order) until every one is acknowledged, or `until`
   * says stop. Rejects on `deadlineMs` or a refused answer.
   */
  async send(from: number, to: number, phase: SendPhaseOptions = {}): Promise<PhaseResult> {
    const deadline = Date.now() + (phase.deadlineMs ?? 60_000);
    const control: PhaseControl = { failure: undefined, stoppedBy: undefined };
    const laneWork = this.lanes.map(async (lane) => {
      for (let n = from + ((lane.index - (from % this.lanes.length) + this.lanes.length) % this.lanes.length); n < to; n += this.lanes.length) {
        if (control.failure || control.stoppedBy || this.closed || phase.until?.()) return;
        await this.deliver(lane, this.readings[n]!, deadline, phase, control);
        if (this.options.paceMs) await new Promise((resolve) => setTimeout(resolve, this.options.paceMs));
      }
    });
    await Promise.all(laneWork);
    if (control.failure) throw control.failure;
    return control.stoppedBy ? { stoppedBy: control.stoppedBy } : {};
  }

  private async deliver(lane: Lane, reading: ReadingRecord, deadline: number, phase: SendPhaseOptions, control: PhaseControl): Promise<void> {
    const fail = (error: Error): void => {
      control.failure ??= error;
    };
    const body = Buffer.from(this.options.payload?.(reading.n) ?? `{"n":${reading.n}}`);
    const path = ['api', 'v1', lane.device.token, 'telemetry'];
    const tokens = new Set<string>();
    while (reading.ackedAt === undefined) {
      if (this.closed || control.failure || control.stoppedBy) return;
      if (Date.now() > deadline) {
        fail(new Error(`reading ${reading.n} (${reading.device}) not acknowledged before the deadline; ${this.acked} of ${this.readings.length} acknowledged; ${this.describe()}`));
        return;
      }
      const messageId = lane.nextMessageId;
      lane.nextMessageId = (lane.nextMessageId + 1) & 0xffff;
      const token = Buffer.from([lane.index & 0xff, (lane.tokenCounter >> 16) & 0xff, (lane.tokenCounter >> 8) & 0xff, lane.tokenCounter & 0xff]);
      lane.tokenCounter++;
      tokens.add(token.toString('hex'));
      const datagram = coapPacket.generate({
        code: 'POST',
        confirmable: true,
        messageId,
        token,
        options: path.map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
        payload: body,
      });
      if (reading.attempts > 0) this.stats.freshRetries++;
      reading.attempts++;
      reading.firstSentAt ??= ++this.clock;
      const answer = await lane.exchange(datagram, messageId, tokens);
      if (!answer) {
        reading.unanswered++;
        continue;
      }
      reading.lastAnswer = answer.code;
      this.stats.codes.set(answer.code, (this.stats.codes.get(answer.code) ?? 0) + 1);
      if (phase.refuse?.(answer.code, answer.payload)) {
        fail(new Error(`reading ${reading.n} (${reading.device}) was answered ${answer.code} "${answer.payload}" (refused in this phase); ${this.describe()}`));
        return;
      }
      if (answer.code === '2.01') {
        reading.ackedAt = ++this.clock;
        this.ackedCount++;
        for (const listener of this.ackListeners) listener(reading);
        return;
      }
      if (UNAVAILABLE.has(answer.code)) {
        const key = `${answer.code} ${answer.payload}`;
        this.stats.diagnostics.set(key, (this.stats.diagnostics.get(key) ?? 0) + 1);
      }
      if (phase.stopOn?.(answer.code, answer.payload)) {
        control.stoppedBy ??= { n: reading.n, code: answer.code, payload: answer.payload, maxAge: answer.maxAge };
        return;
      }
      if (phase.answeredTriesPerReading !== undefined && reading.attempts - reading.unanswered >= phase.answeredTriesPerReading) return;
      const maxAgeMs = (answer.maxAge ?? 1) * 1000;
      await new Promise((resolve) => setTimeout(resolve, Math.min(maxAgeMs, this.options.maxBackoffMs ?? 200)));
    }
  }

  /** One line of figures for logs and failure messages. */
  describe(): string {
    const s = this.stats;
    const codes = [...s.codes].map(([code, count]) => `${code}×${count}`).join(' ');
    const diagnostics = [...s.diagnostics].map(([text, count]) => `"${text}"×${count}`).join(', ');
    return `datagrams ${s.datagrams}, retransmissions ${s.retransmissions}, fresh retries ${s.freshRetries}, empty ACKs ${s.emptyAcks}, separate responses ${s.separateResponses}, answers ${codes || 'none'}${diagnostics ? `, diagnostics ${diagnostics}` : ''}`;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const lane of this.lanes) lane.close();
  }
}

export interface Tally {
  /** Distinct readings seen upstream. */
  readonly distinct: number;
  /** Acknowledged readings never seen upstream. */
  readonly missing: number[];
  /** Occurrences beyond the first, summed over readings. */
  readonly duplicates: number;
  /** Readings seen more than once. */
  readonly duplicated: number;
  /** Readings upstream under another device's name, or not ours at all. */
  readonly misplaced: string[];
  /**
   * Pairs of one device's readings whose first occurrences arrived against what the device knew: a
   * reading acknowledged before another was first sent must arrive first.
   */
  readonly orderViolations: string[];
  /** Telemetry records upstream, all told. */
  readonly records: number;
  /** Most records one telemetry message carried. */
  readonly maxRecordsPerMessage: number;
  /** Position (in upstream records) of each reading's first occurrence. */
  readonly firstSeenAt: ReadonlyMap<number, number>;
  /** How often each reading arrived. */
  readonly occurrences: ReadonlyMap<number, number>;
}

/** What arrived upstream, as readings: counts, gaps, duplicates and per-device order. */
export function tally(received: readonly Received[], readings: readonly ReadingRecord[], valueOf: (values: Record<string, unknown>) => unknown = (v) => v.n): Tally {
  const firstSeenAt = new Map<number, number>();
  const seen = new Map<number, number>();
  const misplaced: string[] = [];
  let records = 0;
  let maxRecordsPerMessage = 0;
  for (const message of received) {
    if (message.topic !== 'v1/gateway/telemetry' || message.json === null || typeof message.json !== 'object') continue;
    let inMessage = 0;
    for (const [device, list] of Object.entries(message.json as Record<string, unknown>)) {
      if (!Array.isArray(list)) continue;
      for (const record of list as Array<{ values?: Record<string, unknown> }>) {
        const position = records++;
        inMessage++;
        const n = valueOf(record.values ?? {});
        const reading = typeof n === 'number' ? readings[n] : undefined;
        if (!reading) {
          misplaced.push(`${device}: ${JSON.stringify(record.values)} is no reading of this test`);
          continue;
        }
        if (reading.device !== device) misplaced.push(`reading ${reading.n} of ${reading.device} arrived as ${device}`);
        seen.set(reading.n, (seen.get(reading.n) ?? 0) + 1);
        if (!firstSeenAt.has(reading.n)) firstSeenAt.set(reading.n, position);
      }
    }
    maxRecordsPerMessage = Math.max(maxRecordsPerMessage, inMessage);
  }
  const missing = readings.filter((r) => r.ackedAt !== undefined && !seen.has(r.n)).map((r) => r.n);
  let duplicates = 0;
  let duplicated = 0;
  for (const count of seen.values()) {
    if (count > 1) {
      duplicates += count - 1;
      duplicated++;
    }
  }

  const orderViolations: string[] = [];
  const byDevice = new Map<string, ReadingRecord[]>();
  for (const reading of readings) {
    if (!firstSeenAt.has(reading.n)) continue;
    const list = byDevice.get(reading.device) ?? [];
    list.push(reading);
    byDevice.set(reading.device, list);
  }
  for (const [device, list] of byDevice) {
    list.sort((a, b) => firstSeenAt.get(a.n)! - firstSeenAt.get(b.n)!);
    // Walking back from the end: the earliest acknowledgement among readings that arrived later.
    let laterAck: ReadingRecord | undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const reading = list[i]!;
      if (laterAck && reading.firstSentAt !== undefined && laterAck.ackedAt! < reading.firstSentAt && orderViolations.length < 20) {
        orderViolations.push(`${device}: reading ${reading.n} arrived before ${laterAck.n}, which the device had acknowledged before it first sent ${reading.n}`);
      }
      if (reading.ackedAt !== undefined && (!laterAck || reading.ackedAt < laterAck.ackedAt!)) laterAck = reading;
    }
  }
  return { distinct: seen.size, missing, duplicates, duplicated, misplaced, orderViolations, records, maxRecordsPerMessage, firstSeenAt, occurrences: seen };
}
