// Wear (issue 20): the bytes the gateway process causes to be written to storage (write_bytes in
// /proc/PID/io) per reading answered 2.01, for one device posting 35-byte telemetry readings as CoAP CON
// POSTs at a fixed rate, each retried until it is answered 2.01. Every scenario runs once per outbox.mode
// against a fresh gateway and a broker of its own; with the broker down the gateway points at a port where
// nothing listens, and afterwards a broker is started there and a subscriber checks that every reading
// answered 2.01 arrives. Run alone: npm run bench -- --targets coap2mqtt-wear [--duration 20]
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as coapPacket from 'coap-packet';
import mqtt, { type MqttClient } from 'mqtt';
import { summarize, type LatencySummary } from './loadgen.js';
import { freeTcpPort, sleep } from '../test/helpers/ports.js';

export type OutboxMode = 'spill' | 'always';
export const WEAR_MODES: readonly OutboxMode[] = ['spill', 'always'];

export interface WearScenario {
  /** Readings a second. */
  readonly rate: number;
  readonly brokerUp: boolean;
}

export const WEAR_SCENARIOS: readonly WearScenario[] = [
  { rate: 10, brokerUp: true },
  { rate: 100, brokerUp: true },
  { rate: 1000, brokerUp: true },
  { rate: 500, brokerUp: false },
];

/** What the wear runs need of the bench harness (run.ts starts and tracks the processes). */
export interface WearHarness {
  /** mosquitto on `port`, keeping sessions in `persistenceDir` across a stop and a start. */
  startBroker(port: number, persistenceDir: string): Promise<{ readonly pid: number; stop(): Promise<unknown> }>;
  /** The built gateway with one device (token tok-0), against mqtt://127.0.0.1:mqttPort; ready when listening (and connected, if waitForBroker). */
  startGateway(mqttPort: number, mode: OutboxMode, waitForBroker: boolean): Promise<WearGateway>;
}

export interface WearGateway {
  readonly pid: number;
  /** Its CoAP (UDP) port. */
  readonly port: number;
  readonly notableLines: readonly string[];
  readonly notableCount: number;
  stop(): Promise<number | null>;
}

export interface WearRun {
  readonly rate: number;
  readonly brokerUp: boolean;
  readonly mode: OutboxMode;
  readonly durationS: number;
  /** write_bytes from spawning the gateway to its first reading: the reserve file, the new database. */
  readonly startupWriteBytes: number;
  /** write_bytes (and cancelled_write_bytes) from the first reading to durationS later. */
  readonly writeBytes: number;
  readonly cancelledWriteBytes: number;
  readonly sent: number;
  /** Readings answered 2.01 within the window. */
  readonly acknowledged: number;
  readonly bytesPerReading: number;
  readonly latencyMs: LatencySummary;
  /** Answers by code over the whole run (retries included), e.g. {"2.01": 9990, "5.03": 3}. */
  readonly codes: Record<string, number>;
  readonly retransmissions: number;
  /** Readings answered 2.01 at any time, and how many of those never reached the subscriber. */
  readonly acknowledgedInAll: number;
  readonly missingUpstream: number;
  /** Readings never answered 2.01 despite retries (still waiting when the run ended). */
  readonly unanswered: number;
  readonly exitCode: number | null;
  readonly notableLogLines: readonly string[];
  readonly notableLogLineCount: number;
}

const HOST = '127.0.0.1';
const TOKEN = 'tok-0';
/** 35 bytes for n up to 8,999,999: `{"temperature":21.500,"n":1000000}`. */
const body = (n: number): string => `{"temperature":21.500,"n":${1_000_000 + n}}`;
/** RFC 7252 §4.8: ACK_TIMEOUT 2 s (the first wait, doubled per retransmission), MAX_RETRANSMIT 4. */
const ACK_TIMEOUT_MS = 2000;
const MAX_RETRANSMIT = 4;
/** After an empty ACK, how long the separate response may take before the reading is tried afresh. */
const SEPARATE_RESPONSE_MS = 10_000;
/** Cap on waiting Max-Age after a 5.03 (a real device waits it all; the bench would stall). */
const MAX_BACKOFF_MS = 1000;
const SETTLE_MS = 1000;
/** After the window: how long unanswered readings may keep retrying, and how long arrival upstream may take. */
const DRAIN_MS = 15_000;
const ARRIVAL_MS = 60_000;

/** Every scenario in both modes, one after the other; `progress` hears a line per run. */
export async function runWear(harness: WearHarness, durationS: number, progress: (line: string) => void): Promise<WearRun[]> {
  const runs: WearRun[] = [];
  for (const scenario of WEAR_SCENARIOS) {
    for (const mode of WEAR_MODES) {
      progress(`coap2mqtt-wear: ${scenario.rate}/s, broker ${scenario.brokerUp ? 'up' : 'down'}, outbox.mode ${mode}, ${durationS} s… `);
      const run = await runOne(harness, scenario, mode, durationS);
      runs.push(run);
      progress(`${Math.round(run.bytesPerReading).toLocaleString('en-US')} B/reading\n`);
    }
  }
  return runs;
}

async function runOne(harness: WearHarness, scenario: WearScenario, mode: OutboxMode, durationS: number): Promise<WearRun> {
  const mqttPort = await freeTcpPort();
  const persistenceDir = mkdtempSync(join(os.tmpdir(), 'coap2mqtt-wear-broker-'));
  let broker = await harness.startBroker(mqttPort, persistenceDir);
  let counter: UpstreamCounter | undefined;
  let gateway: WearGateway | undefined;
  let device: Device | undefined;
  try {
    // The subscriber's session (clean: false) outlives the broker's restart: what the gateway delivers
    // once the broker is back is kept for it even if the gateway gets there first.
    counter = await UpstreamCounter.connect(mqttPort);
    if (!scenario.brokerUp) {
      await counter.close();
      await broker.stop();
    }
    gateway = await harness.startGateway(mqttPort, mode, scenario.brokerUp);
    await sleep(SETTLE_MS);
    device = await Device.open(gateway.port);
    const window = await device.run(scenario.rate, durationS * 1000, () => readIo(gateway!.pid));
    await device.drain(DRAIN_MS);
    if (!scenario.brokerUp) {
      broker = await harness.startBroker(mqttPort, persistenceDir);
      counter = await UpstreamCounter.connect(mqttPort);
    }
    const acknowledged = device.acknowledgedReadings();
    const missing = await counter!.waitFor(acknowledged, ARRIVAL_MS);
    const exitCode = await gateway.stop();
    const writeBytes = window.after.writeBytes - window.before.writeBytes;
    return {
      ...scenario,
      mode,
      durationS,
      startupWriteBytes: window.before.writeBytes,
      writeBytes,
      cancelledWriteBytes: window.after.cancelledWriteBytes - window.before.cancelledWriteBytes,
      sent: window.sent,
      acknowledged: window.acknowledged,
      bytesPerReading: writeBytes / Math.max(1, window.acknowledged),
      latencyMs: device.latency(),
      codes: device.codes(),
      retransmissions: device.retransmissions,
      acknowledgedInAll: acknowledged.length,
      missingUpstream: missing,
      unanswered: device.unanswered,
      exitCode,
      notableLogLines: gateway.notableLines,
      notableLogLineCount: gateway.notableCount,
    };
  } finally {
    device?.close();
    await counter?.close();
    await gateway?.stop();
    await broker.stop();
    rmSync(persistenceDir, { recursive: true, force: true });
  }
}

export interface Io {
  readonly writeBytes: number;
  readonly cancelledWriteBytes: number;
}

/** The process's storage writes so far (every thread: the checkpointer and the thread pool included). */
export function readIo(pid: number): Io {
  const text = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { writeBytes: field('write_bytes'), cancelledWriteBytes: field('cancelled_write_bytes') };
}

interface Pending {
  readonly n: number;
  readonly firstSentAt: number;
  datagram: Buffer;
  messageId: number;
  /** When to retransmit, or to try afresh. */
  deadline: number;
  waitMs: number;
  retransmits: number;
  /** An empty ACK came: the answer follows as a separate response. */
  separate: boolean;
}

/** One device (token tok-0) on one UDP socket: open-loop sends at a fixed rate, each reading retried until 2.01. */
class Device {
  private readonly pending = new Map<number, Pending>();
  private readonly acknowledged: number[] = [];
  private latencies: number[] = [];
  private readonly answerCodes = new Map<string, number>();
  private nextMessageId = Math.floor(Math.random() * 0x10000);
  private sweeper: NodeJS.Timeout | undefined;
  private windowOpen = false;
  private acknowledgedInWindow = 0;
  retransmissions = 0;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly path: readonly string[],
  ) {
    socket.on('message', (datagram) => this.receive(datagram));
  }

  static async open(port: number): Promise<Device> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.connect(port, HOST, resolve));
    socket.setRecvBufferSize(4 << 20);
    socket.setSendBufferSize(4 << 20);
    return new Device(socket, ['api', 'v1', TOKEN, 'telemetry']);
  }

  /** Sends `rate` readings a second for `durationMs`; `meter` is read just before the first and at the end. */
  async run(rate: number, durationMs: number, meter: () => Io): Promise<{ before: Io; after: Io; sent: number; acknowledged: number }> {
    this.sweeper = setInterval(() => this.sweep(), 20);
    const before = meter();
    const startedAt = performance.now();
    this.windowOpen = true;
    let sent = 0;
    // Open loop: sends follow the clock, never the answers.
    const pacer = setInterval(() => {
      const due = Math.min(Math.floor(((performance.now() - startedAt) * rate) / 1000), Math.round((durationMs * rate) / 1000));
      while (sent < due) this.send(sent++);
    }, 1);
    await sleep(durationMs);
    clearInterval(pacer);
    this.windowOpen = false;
    const after = meter();
    return { before, after, sent, acknowledged: this.acknowledgedInWindow };
  }

  /** Waits for every reading sent to be answered 2.01 (retries go on), up to `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.pending.size > 0 && performance.now() < deadline) await sleep(50);
    clearInterval(this.sweeper);
  }

  get unanswered(): number {
    return this.pending.size;
  }

  acknowledgedReadings(): readonly number[] {
    return this.acknowledged;
  }

  latency(): LatencySummary {
    return summarize(Float64Array.from(this.latencies));
  }

  codes(): Record<string, number> {
    return Object.fromEntries(this.answerCodes);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.socket.close();
  }

  private send(n: number): void {
    const now = performance.now();
    const reading: Pending = { n, firstSentAt: now, datagram: Buffer.alloc(0), messageId: 0, deadline: 0, waitMs: 0, retransmits: 0, separate: false };
    this.pending.set(n, reading);
    this.sendAfresh(reading, now);
  }

  /** A fresh message id (first try, or after a refusal or exhausted retransmissions), same token. */
  private sendAfresh(reading: Pending, now: number): void {
    reading.messageId = this.nextMessageId;
    this.nextMessageId = (this.nextMessageId + 1) & 0xffff;
    const token = Buffer.alloc(4);
    token.writeUInt32BE(reading.n);
    reading.datagram = coapPacket.generate({
      code: 'POST',
      confirmable: true,
      messageId: reading.messageId,
      token,
      options: [...this.path.map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })), { name: 'Content-Format', value: Buffer.from([50]) }],
      payload: Buffer.from(body(reading.n)),
    });
    reading.retransmits = 0;
    reading.separate = false;
    reading.waitMs = ACK_TIMEOUT_MS;
    reading.deadline = now + reading.waitMs;
    this.socket.send(reading.datagram);
  }

  private sweep(): void {
    const now = performance.now();
    for (const reading of this.pending.values()) {
      if (now < reading.deadline) continue;
      if (reading.datagram.length === 0 || reading.separate || reading.retransmits >= MAX_RETRANSMIT) {
        this.sendAfresh(reading, now);
        continue;
      }
      reading.retransmits++;
      this.retransmissions++;
      reading.waitMs *= 2;
      reading.deadline = now + reading.waitMs;
      this.socket.send(reading.datagram);
    }
  }

  private receive(datagram: Buffer): void {
    let packet: coapPacket.ParsedPacket;
    try {
      packet = coapPacket.parse(datagram);
    } catch {
      return;
    }
    if (packet.confirmable) this.socket.send(coapPacket.generate({ ack: true, messageId: packet.messageId, code: '0.00' }));
    if (packet.reset) return;
    if (packet.code === '0.00') {
      // An empty ACK: the answer comes later as a separate response.
      const reading = [...this.pending.values()].find((r) => r.messageId === packet.messageId);
      if (reading) {
        reading.separate = true;
        reading.deadline = performance.now() + SEPARATE_RESPONSE_MS;
      }
      return;
    }
    if (packet.token.length !== 4) return;
    const reading = this.pending.get(packet.token.readUInt32BE(0));
    if (!reading) return; // a duplicate answer
    this.answerCodes.set(packet.code, (this.answerCodes.get(packet.code) ?? 0) + 1);
    const now = performance.now();
    if (packet.code === '2.01') {
      this.pending.delete(reading.n);
      this.acknowledged.push(reading.n);
      this.latencies.push(now - reading.firstSentAt);
      if (this.windowOpen) this.acknowledgedInWindow++;
      return;
    }
    // Refused (5.03, 4.29): wait Max-Age (capped), then try again with a fresh message id.
    const maxAge = packet.options.find((option) => option.name === 'Max-Age')?.value;
    const seconds = maxAge && maxAge.length > 0 ? maxAge.readUIntBE(0, maxAge.length) : 0;
    reading.datagram = Buffer.alloc(0);
    reading.deadline = now + Math.min(seconds * 1000, MAX_BACKOFF_MS);
  }
}

/** Counts the readings (by n) that arrive on v1/gateway/telemetry, with a session that survives a broker restart. */
class UpstreamCounter {
  private readonly seen = new Set<number>();

  private constructor(private readonly client: MqttClient) {
    client.on('message', (_topic, payload) => this.count(payload));
  }

  static async connect(port: number): Promise<UpstreamCounter> {
    const client = mqtt.connect(`mqtt://${HOST}:${port}`, { clientId: 'coap2mqtt-wear-counter', clean: false, reconnectPeriod: 200 });
    const counter = new UpstreamCounter(client);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync('v1/gateway/telemetry', { qos: 1 });
    return counter;
  }

  /** How many of `readings` have not arrived after `timeoutMs`. */
  async waitFor(readings: readonly number[], timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    const missing = (): number => readings.reduce((sum, n) => sum + (this.seen.has(1_000_000 + n) ? 0 : 1), 0);
    while (missing() > 0 && performance.now() < deadline) await sleep(200);
    return missing();
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }

  private count(payload: Buffer): void {
    let message: unknown;
    try {
      message = JSON.parse(payload.toString());
    } catch {
      return;
    }
    for (const records of Object.values(message as Record<string, unknown>)) {
      if (!Array.isArray(records)) continue;
      for (const record of records as Array<{ values?: { n?: unknown } }>) {
        if (typeof record.values?.n === 'number') this.seen.add(record.values.n);
      }
    }
  }
}
