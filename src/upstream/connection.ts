// The one MQTT connection to ThingsBoard. Publishes are QoS 1 and resolve on PUBACK, within a bounded
// in-flight window. Reconnection is ours (MQTT.js only knows a fixed period): exponential back-off with
// jitter, and in-flight messages are failed on disconnect rather than replayed blindly, so a device is
// always told the truth and the gateway can re-announce its devices before any data follows. Publishes
// are paced under the session limits ThingsBoard announces (applySessionLimits).
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { UpstreamConfig } from '../config/load.js';
import { redactUrl } from '../log.js';
import { Topic, type SessionLimits } from './gateway-api.js';
import { HEADROOM, UpstreamPacer } from './pacer.js';
import { loadQuickAckBinding, quickAcker, type QuickAckBinding } from './quick-ack.js';

/** The upstream slice of the configuration, with `url` resolved (the embedded broker's when empty). */
export type UpstreamConnectionOptions = UpstreamConfig;

export interface PublishOptions {
  /** Telemetry data points the message carries, for ThingsBoard's data-point rate limit. */
  readonly dataPoints?: number;
  /**
   * Wait for the PUBACK or the disconnection however long it takes, outside the queue limit: for a caller
   * (the outbox) that bounds how many it has outstanding and keeps the data meanwhile.
   */
  readonly untimed?: boolean;
}

/** The broker did not take the message; nothing of it is kept. */
export class UpstreamUnavailableError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** Counters and state for a health and metrics endpoint; each call returns a fresh snapshot. */
export interface UpstreamStats {
  readonly connected: boolean;
  /** When the connection came up, or went down (before the first connection: when connecting began); ms since the epoch. */
  readonly since: number | undefined;
  /** Successful connections since start: the first one, then each reconnection. */
  readonly connects: number;
  /** Connection attempts that failed since start. */
  readonly failedAttempts: number;
  /** Publishes the broker acknowledged (PUBACK). */
  readonly acknowledged: number;
  /** Publishes that got no PUBACK: not connected, queue full, timed out, connection lost, shutting down. */
  readonly failed: number;
  /** Publishes waiting for their PUBACK, and waiting for a free slot. */
  readonly inflight: number;
  readonly queued: number;
  /** While disconnected: why the connection was lost or the last attempt failed, as logged (no credentials). */
  readonly lastFailure: string | undefined;
}

interface Job {
  readonly topic: string;
  readonly payload: string;
  readonly points: number;
  readonly resolve: () => void;
  readonly reject: (error: UpstreamUnavailableError) => void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
}

const REMINDER_INTERVAL_MS = 10 * 60_000;
/** Retry hint while connected but saturated or slow to acknowledge. */
const BUSY_RETRY_SECONDS = 5;
/** Broker messages handled per turn of the event loop: about a millisecond of notifications. */
const INBOUND_SLICE = 64;

/**
 * The MQTT.js options of the gateway's connection: credentials, TLS files (read here), timeouts. Shared with
 * `coap2mqtt doctor`, so its test connection is made exactly as the gateway's.
 */
export function mqttClientOptions(o: UpstreamConnectionOptions): IClientOptions {
  return {
    clientId: o.clientId,
    clean: true,
    keepalive: o.keepaliveSeconds,
    connectTimeout: o.connectTimeoutMs,
    reconnectPeriod: 0,
    protocolVersion: 4,
    // mqtt-packet would otherwise build a Buffer for each of the 65,536 packet ids at the first publish:
    // 6 MB of heap for the life of the process, to save one 2-byte allocation per packet.
    writeCache: false,
    username: o.accessToken || o.username || undefined,
    password: o.password || undefined,
    ca: o.ca ? readFileSync(o.ca) : undefined,
    cert: o.cert ? readFileSync(o.cert) : undefined,
    key: o.key ? readFileSync(o.key) : undefined,
  };
}

export class UpstreamConnection {
  private client: MqttClient | undefined;
  private isConnected = false;
  private stopping = false;
  private inflight = 0;
  private readonly queue: Job[] = [];
  private readonly connectedListeners: Array<() => void> = [];
  private readonly messageListeners: Array<(topic: string, payload: Buffer) => void> = [];
  /** Messages from the broker not yet handed to the listeners, oldest first (see receive()). */
  private inbound: Array<{ topic: string; payload: Buffer }> = [];
  private inboundNext = 0;
  private subscriptions: readonly string[] = [];
  private reconnectTimer: NodeJS.Timeout | undefined;
  private nextAttemptAt = 0;
  private failedAttempts = 0;
  private lastError: string | undefined;
  private lastLoggedFailure: { reason: string; at: number } | undefined;
  private disconnectedAt: number | undefined;
  private connects = 0;
  private since: number | undefined;
  private lastFailure: string | undefined;
  private readonly counters = { failedAttempts: 0, acknowledged: 0, failed: 0 };
  private readonly pubackListeners: Array<(seconds: number) => void> = [];
  private readonly pacer = new UpstreamPacer();
  private paceTimer: NodeJS.Timeout | undefined;
  private sessionLimits: SessionLimits | undefined;
  private limitsSettled = false;
  private readonly readyListeners: Array<() => void> = [];
  /** Set once immediate ACKs turned out impossible (said once in the log, not tried on each reconnection). */
  private quickAckUnavailable = false;

  constructor(
    private readonly options: UpstreamConnectionOptions,
    private readonly log: Logger,
    private readonly quickAckBinding: () => QuickAckBinding = loadQuickAckBinding,
  ) {}

  get connected(): boolean {
    return this.isConnected;
  }

  /** Connected, and the session's limits are known (or were not answered in time): bulk traffic may flow. */
  get ready(): boolean {
    return this.isConnected && this.limitsSettled;
  }

  /** Called each time the connection becomes ready. */
  onReady(listener: () => void): void {
    this.readyListeners.push(listener);
  }

  /** Publishes allowed in flight: the configured window, within 80% of what ThingsBoard announced. */
  get inflightLimit(): number {
    const announced = this.sessionLimits?.maxInflightMessages;
    const allowed = announced === undefined ? Infinity : Math.max(1, Math.floor(announced * HEADROOM));
    return Math.min(this.options.maxInflight, allowed);
  }

  /** Publishes waiting for their PUBACK or for a slot in the window. */
  get outstanding(): number {
    return this.inflight + this.queue.length;
  }

  /** Largest payload to publish: the configured limit, or ThingsBoard's if it announced a smaller one. */
  get maxMessageBytes(): number {
    return Math.min(this.options.maxMessageBytes, this.sessionLimits?.maxPayloadSize ?? Infinity);
  }

  /** Most telemetry data points one publish may carry under the data-point rate limits. */
  get maxPointsPerPublish(): number {
    return this.pacer.maxPointsPerPublish();
  }

  /**
   * The session's limits as ThingsBoard announced them (undefined: none announced, or no answer in time);
   * from here on the connection is ready.
   */
  applySessionLimits(limits: SessionLimits | undefined): void {
    if (!this.isConnected) return;
    this.sessionLimits = limits;
    this.pacer.configure(limits);
    const wasSettled = this.limitsSettled;
    this.limitsSettled = true;
    this.pump();
    if (!wasSettled) for (const listener of this.readyListeners) listener();
  }

  /** Called on every successful (re)connection, before queued traffic flows. */
  onConnected(listener: () => void): void {
    this.connectedListeners.push(listener);
  }

  /** Topics subscribed (QoS 1) on every connection, before the connected listeners run. */
  subscribe(topics: readonly string[]): void {
    this.subscriptions = topics;
  }

  /** Each PUBACK, with the seconds since its publish went to the client (not the time it waited in the queue). */
  onPuback(listener: (seconds: number) => void): void {
    this.pubackListeners.push(listener);
  }

  stats(): UpstreamStats {
    return {
      connected: this.isConnected,
      since: this.since,
      connects: this.connects,
      ...this.counters,
      inflight: this.inflight,
      queued: this.queue.length,
      lastFailure: this.isConnected ? undefined : this.lastFailure,
    };
  }

  /** Every message arriving on a subscribed topic. */
  onMessage(listener: (topic: string, payload: Buffer) => void): void {
    this.messageListeners.push(listener);
  }

  /** Starts connecting in the background; network trouble is logged and retried, never thrown. */
  start(): void {
    const o = this.options;
    const clientOptions = mqttClientOptions(o);
    this.log.info({ url: redactUrl(o.url), clientId: o.clientId }, 'connecting to upstream broker');
    this.since = Date.now();
    const client = mqtt.connect(o.url, clientOptions);
    this.client = client;
    client.on('connect', () => this.handleConnect());
    client.on('close', () => this.handleClose());
    client.on('message', (topic, payload) => this.receive(topic, payload));
    client.on('error', (error: Error & { code?: string | number }) => {
      this.lastError = describeError(error);
    });
  }

  /**
   * One TCP read can hold hundreds of messages (ThingsBoard fanning an RPC out to every device), which
   * MQTT.js emits in one go. Handled all at once, the notifications they cause kept the gateway from
   * reading its CoAP socket until the last one was sent, and the devices' ACKs overflowed its buffer.
   * They are handed on in slices, one per turn of the event loop, in order.
   */
  private receive(topic: string, payload: Buffer): void {
    this.inbound.push({ topic, payload });
    if (this.inbound.length - this.inboundNext === 1) setImmediate(() => this.deliverInbound());
  }

  private deliverInbound(): void {
    const end = Math.min(this.inbound.length, this.inboundNext + INBOUND_SLICE);
    while (this.inboundNext < end) {
      const { topic, payload } = this.inbound[this.inboundNext++]!;
      for (const listener of this.messageListeners) listener(topic, payload);
    }
    if (this.inboundNext < this.inbound.length) {
      setImmediate(() => this.deliverInbound());
    } else {
      this.inbound = [];
      this.inboundNext = 0;
    }
  }

  /** Resolves when the broker has acknowledged the message (QoS 1 PUBACK). */
  publish(topic: string, payload: string, options: PublishOptions = {}): Promise<void> {
    if (!this.isConnected) {
      this.counters.failed++;
      return Promise.reject(this.unavailable('the gateway is not connected to the upstream broker'));
    }
    return new Promise<void>((resolve, reject) => {
      const job: Job = { topic, payload, points: options.dataPoints ?? 0, resolve, reject, timer: undefined, settled: false };
      if (options.untimed) {
        this.queue.push(job);
        this.pump();
        return;
      }
      const mustWait = this.inflight >= this.inflightLimit || this.paceTimer !== undefined;
      if (mustWait && this.queue.length >= this.options.maxQueuedPublishes) {
        this.fail(job, 'the upstream publish queue is full');
        return;
      }
      job.timer = setTimeout(() => {
        job.timer = undefined;
        const queued = this.queue.indexOf(job);
        if (queued >= 0) this.queue.splice(queued, 1);
        // An in-flight message keeps its window slot until the PUBACK or the disconnect.
        this.fail(job, `the upstream broker did not acknowledge within ${this.options.publishTimeoutMs} ms`);
      }, this.options.publishTimeoutMs);
      this.queue.push(job);
      this.pump();
    });
  }

  /** When a device told "unavailable" should try again, in seconds. */
  retryAfterSeconds(): number {
    if (this.reconnectTimer) return Math.min(3600, Math.max(1, Math.ceil((this.nextAttemptAt - Date.now()) / 1000)));
    // A connection attempt is under way: its outcome is known within about the shortest back-off.
    if (!this.isConnected) return Math.max(1, Math.ceil(this.options.reconnectMinMs / 1000));
    return BUSY_RETRY_SECONDS;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    // No new publishes from here on; those in flight still get their PUBACK or fail.
    this.isConnected = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    for (const job of this.queue.splice(0)) this.fail(job, 'the gateway is shutting down');
    // Messages from the broker not handed on yet are dropped with the parts that would handle them.
    this.inbound = [];
    this.inboundNext = 0;
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    // A clean DISCONNECT once in-flight messages are acknowledged; forced if the broker does not answer.
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => client.end(true, {}, () => resolve()), 2000);
      client.end(false, {}, () => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private send(job: Job): void {
    this.inflight++;
    const sentAt = performance.now();
    this.client!.publish(job.topic, job.payload, { qos: 1 }, (error) => {
      this.inflight--;
      if (error) this.fail(job, `the upstream connection was lost before the broker acknowledged`);
      else {
        this.counters.acknowledged++;
        if (this.pubackListeners.length > 0) {
          const seconds = (performance.now() - sentAt) / 1000;
          for (const listener of this.pubackListeners) listener(seconds);
        }
        this.settle(job);
        job.resolve();
      }
      this.pump();
    });
  }

  /** Sends queued jobs in order while the window and the rate limits allow. */
  private pump(): void {
    if (this.paceTimer) return;
    while (this.isConnected && this.inflight < this.inflightLimit && this.queue.length > 0) {
      const job = this.queue[0]!;
      if (job.settled) {
        this.queue.shift();
        continue;
      }
      const wait = this.pacer.take({ telemetry: job.topic === Topic.telemetry, points: job.points });
      if (wait > 0) {
        this.paceTimer = setTimeout(() => {
          this.paceTimer = undefined;
          this.pump();
        }, wait);
        return;
      }
      this.send(this.queue.shift()!);
    }
  }

  private handleConnect(): void {
    this.isConnected = true;
    const stream = this.client?.stream;
    // Devices wait for PUBACKs: no Nagle delay on small publishes (TCP and TLS sockets; not WebSockets).
    (stream as { setNoDelay?: (noDelay: boolean) => void } | undefined)?.setNoDelay?.(true);
    if (stream) this.acknowledgeReadsAtOnce(stream);
    this.connects++;
    this.since = Date.now();
    // Until this session's limits are known, none apply beyond the configured window; bulk senders wait
    // for `ready` (the bridge asks ThingsBoard and calls applySessionLimits).
    this.sessionLimits = undefined;
    this.pacer.configure(undefined);
    this.limitsSettled = this.options.sessionLimitsTimeoutMs === 0;
    if (this.connects === 1) {
      this.log.info({ url: redactUrl(this.options.url) }, 'upstream broker connected');
    } else {
      const downForMs = Date.now() - (this.disconnectedAt ?? Date.now());
      this.log.info({ url: redactUrl(this.options.url), attempts: this.failedAttempts + 1, downForMs }, 'upstream broker reconnected');
    }
    this.failedAttempts = 0;
    this.lastError = undefined;
    this.lastLoggedFailure = undefined;
    // A clean session forgets subscriptions: ask again each time, ahead of the devices' connect messages,
    // so no push for them can slip by unheard.
    if (this.subscriptions.length > 0) this.subscribeNow(this.subscriptions);
    for (const listener of this.connectedListeners) listener();
    this.pump();
    if (this.limitsSettled) for (const listener of this.readyListeners) listener();
  }

  /**
   * A broker that keeps Nagle on holds a PUBACK until its previous one is acknowledged at the TCP level, and
   * Linux would send that ACK only with the next publish, or after 40 ms (quick-ack.ts). So the ACK goes
   * at once after each read that leaves publishes in flight, whose PUBACKs may be the ones held; a read
   * that settles everything needs none. Costs one setsockopt per such read.
   */
  private acknowledgeReadsAtOnce(stream: NodeJS.ReadableStream): void {
    if (this.quickAckUnavailable) return;
    const acknowledge = quickAcker(stream, this.quickAckBinding, (reason) => {
      this.quickAckUnavailable = true;
      this.log.warn({ reason }, 'immediate TCP ACKs are unavailable: with a broker that keeps Nagle on, PUBACKs (and devices\' answers) may wait up to 40 ms');
    });
    // Registered after MQTT.js's own listener, which has handled the read's first packet by then.
    if (!acknowledge) return;
    stream.on('data', () => {
      if (this.inflight > 0) acknowledge();
    });
  }

  private subscribeNow(topics: readonly string[]): void {
    this.client?.subscribe([...topics], { qos: 1 }, (error, granted) => {
      if (error) {
        this.log.warn({ reason: error.message }, 'subscribing to the downlink topics failed; pushes and RPCs will not arrive until the next reconnection');
        return;
      }
      const refused = (granted ?? []).filter((grant) => grant.qos === 128).map((grant) => grant.topic);
      if (refused.length > 0) {
        this.log.error({ topics: refused }, 'the broker refused these downlink subscriptions; devices will not receive what is sent on them');
      }
    });
  }

  private handleClose(): void {
    const client = this.client;
    const wasConnected = this.isConnected;
    this.isConnected = false;
    this.limitsSettled = false;
    clearTimeout(this.paceTimer);
    this.paceTimer = undefined;
    if (client) {
      // Fail what is in flight now: the device is answered 5.03 and retries (a duplicate upstream is
      // possible only if the PUBACK itself was lost, as QoS 1 allows).
      for (const id of Object.keys(client.outgoing)) client.removeOutgoingMessage(Number(id));
    }
    for (const job of this.queue.splice(0)) this.fail(job, 'the upstream connection was lost');
    if (this.stopping || !client) return;

    const delay = this.nextDelay();
    const reason = this.lastError ?? 'connection closed';
    this.lastFailure = reason;
    if (wasConnected) {
      this.disconnectedAt = this.since = Date.now();
      this.log.warn({ reason, retryInMs: delay }, 'upstream broker connection lost; devices are answered 5.03 until it is back');
    } else {
      this.failedAttempts++;
      this.counters.failedAttempts++;
      const now = Date.now();
      const last = this.lastLoggedFailure;
      if (!last || last.reason !== reason || now - last.at >= REMINDER_INTERVAL_MS) {
        this.lastLoggedFailure = { reason, at: now };
        this.log.warn({ reason, attempts: this.failedAttempts, retryInMs: delay }, `cannot connect to upstream broker: ${reason}`);
      } else {
        this.log.debug({ reason, attempts: this.failedAttempts, retryInMs: delay }, 'upstream connection attempt failed');
      }
    }
    this.lastError = undefined;
    this.nextAttemptAt = Date.now() + delay;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.stopping) client.reconnect();
    }, delay);
  }

  private nextDelay(): number {
    const { reconnectMinMs, reconnectMaxMs } = this.options;
    const base = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** Math.min(this.failedAttempts, 20));
    // ±20% jitter so a fleet of gateways does not reconnect in lock-step after a broker restart.
    return Math.round(Math.min(reconnectMaxMs, base * (0.8 + Math.random() * 0.4)));
  }

  private fail(job: Job, reason: string): void {
    if (job.settled) return;
    this.counters.failed++;
    this.settle(job);
    job.reject(this.unavailable(reason));
  }

  private settle(job: Job): void {
    job.settled = true;
    if (job.timer) clearTimeout(job.timer);
    job.timer = undefined;
  }

  private unavailable(reason: string): UpstreamUnavailableError {
    return new UpstreamUnavailableError(reason, this.retryAfterSeconds());
  }
}

function describeError(error: Error & { code?: string | number }): string {
  if (typeof error.code === 'number') {
    // CONNACK refusals (MQTT 3.1.1 return codes).
    if (error.code === 4 || error.code === 5) {
      return `the broker refused the gateway's credentials (${error.message}); check upstream.accessToken (the gateway device's access token in ThingsBoard)`;
    }
    return error.message;
  }
  switch (error.code) {
    case 'ECONNREFUSED':
      return `connection refused by ${(error as NodeJS.ErrnoException & { address?: string; port?: number }).address ?? 'the broker'} (is the broker running and the port right?)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `host name not found (${error.message})`;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `broker not reachable (${error.code})`;
    default:
      return error.message;
  }
}
