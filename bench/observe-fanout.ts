// Issue 6's scenario: many devices each observing /rpc, then ThingsBoard sends every one of them an RPC at
// once on v1/gateway/rpc and every device replies. Devices are hand-built CoAP on plain UDP sockets (no
// node-coap on the hot path); ThingsBoard is an MQTT.js client on the broker the gateway uses. Measured:
// how long the registrations take, how long until the last device holds its RPC, and how long until the
// last reply is upstream. The caller samples the gateway's memory in onRegistered().
// ObserverFleet is the same devices step by step, for scenarios that do more between the steps (issue 21's
// restart: registrations one at a time, deregistrations, the confirmations a restarted gateway sends).
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import * as coapPacket from 'coap-packet';
import mqtt, { type MqttClient } from 'mqtt';
import { summarize, type LatencySummary } from './loadgen.js';

export interface FleetOptions {
  /** Gateway CoAP host, e.g. 127.0.0.1. */
  readonly host: string;
  /** Gateway CoAP UDP port. */
  readonly port: number;
  /** The broker the gateway is connected to, e.g. mqtt://127.0.0.1:1883. */
  readonly mqttUrl: string;
  /** Observing devices; device i has token `tok-${i}` and name `dev-${i}` in the gateway's registry. */
  readonly devices: number;
  /** 1 = one UDP socket (source port) per device, as in the field; more shares sockets. */
  readonly devicesPerSocket: number;
  /** Registrations (and later replies) in flight at once. */
  readonly concurrency: number;
  /** Per registration and reply, and for the whole fan-out and the replies' arrival upstream. */
  readonly timeoutMs: number;
}

export interface FanoutOptions extends FleetOptions {
  /** Called once the registrations are over, before the fan-out (the caller samples gateway RSS here). */
  readonly onRegistered?: () => Promise<void>;
}

/** Devices start … end - 1 (device i has token tok-i). */
export interface DeviceRange {
  readonly start: number;
  readonly end: number;
}

export interface RegistrationResult {
  readonly registered: number;
  /**
   * By reason: a response code ("4.01"), "2.03 without Observe" (no room for the relation), "timeout",
   * "reset", or a socket error ("ECONNREFUSED").
   */
  readonly registrationFailures: Record<string, number>;
  readonly registrationSeconds: number;
}

export interface DeregistrationResult {
  /** Answered 2.xx to GET with Observe 1. */
  readonly deregistered: number;
  /** By reason, as for registrations. */
  readonly failures: Record<string, number>;
  readonly seconds: number;
}

export interface RpcRoundResult {
  /** RPCs PUBACKed by the broker. */
  readonly rpcsPublished: number;
  /** From the first publish to the last PUBACK (QoS 1). */
  readonly publishSeconds: number;
  /** Devices that received their RPC. */
  readonly delivered: number;
  /** From the first publish to the last device's notification; null unless every device got its RPC. */
  readonly deliveredWithinMs: number | null;
  /** Per device: first publish → its RPC's notification. */
  readonly latencyMs: LatencySummary;
}

export interface RepliesResult {
  /** Replies that reached v1/gateway/rpc; every device that received its RPC replies to it. */
  readonly repliesUpstream: number;
  /** From the first reply sent to the last arriving upstream; null unless every reply sent arrived. */
  readonly repliesWithinMs: number | null;
}

export interface FanoutResult extends RegistrationResult, RpcRoundResult, RepliesResult {
  readonly devices: number;
  /** Notifications seen, by type. */
  readonly confirmable: number;
  readonly nonConfirmable: number;
  /** Notifications of an RPC the device already had (retransmissions). */
  readonly duplicates: number;
}

/** The first notification each observing device heard after expectConfirmations(): a restored relation's confirmation. */
export interface ConfirmationResult {
  /** Observing devices in the range. */
  readonly expected: number;
  readonly confirmed: number;
  /** Per device, from the caller's origin (e.g. the gateway's spawn) to its confirmation. */
  readonly latencyMs: LatencySummary;
  /** From the origin to the last confirmation; null unless every expected device got one. */
  readonly allWithinMs: number | null;
  /** Confirmed within the caller's target time from the origin. */
  readonly withinTarget: number;
  /** By response code and type, e.g. {"2.05 CON": 10000}. */
  readonly kinds: Record<string, number>;
  /** Confirmations whose Observe number is not fresher than the last before (RFC 7641 §4.4, 128 s aside). */
  readonly notFresher: number;
  /** Confirmations carrying the last fan-out's RPC, which the device had already received (and answered). */
  readonly repeatedRpcs: number;
}

const RPC_TOPIC = 'v1/gateway/rpc';
const RPC_METHOD = 'setLed';
const REPLY_BODY = Buffer.from('{"ok":true}');
const JSON_FORMAT = Buffer.from([50]);
// RFC 7252's ACK_TIMEOUT, without the random factor or back-off: a bench wants predictable retries.
const RETRANSMIT_AFTER_MS = 2000;
const MAX_RETRANSMISSIONS = 2;
// Each device takes two message ids (registration, reply) from its socket's 16-bit space, more in scenarios
// of several steps; a socket that runs out throws rather than repeat one (the gateway would take it for a
// retransmission).
const MAX_DEVICES_PER_SOCKET = 0x10000 / 2;
// A socket shared by many devices gets all their notifications in one burst.
const SHARED_SOCKET_BUFFER_BYTES = 4 << 20;
// Publishes per event-loop turn: in between, notifications that have arrived get their timestamps rather
// than waiting behind the whole publishing loop.
const PUBLISH_BATCH = 256;

// A token is the exchange kind, then the device number (5 bytes): answers and notifications find their
// device without a map, and a registration's notifications never look like a reply's answer.
const OBSERVE = 1;
const REPLY = 2;
type Kind = typeof OBSERVE | typeof REPLY;
const TOKEN_LENGTH = 5;

type Outcome = { readonly answer: coapPacket.ParsedPacket } | { readonly failure: string };

interface Device {
  readonly index: number;
  readonly link: Link;
  /** The device's latest CON request (one at a time). */
  exchange: Exchange | undefined;
  observing: boolean;
  /** performance.now() when its RPC arrived; NaN until then. */
  rpcAt: number;
  replyUpstream: boolean;
  /** The Observe number of its latest registration answer or notification. */
  lastObserve: number | undefined;
  /** lastObserve when expectConfirmations() was called: a confirmation must be fresher. */
  observeBefore: number | undefined;
  /** performance.now() when its confirmation arrived; NaN until then. */
  confirmedAt: number;
}

export async function runObserveFanout(options: FanoutOptions): Promise<FanoutResult> {
  const fleet = await ObserverFleet.open(options);
  try {
    const registration = await fleet.register();
    await options.onRegistered?.();
    const round = await fleet.fanOut();
    const replies = await fleet.replyAll();
    return { devices: options.devices, ...registration, ...round, ...fleet.notificationCounts(), ...replies };
  } finally {
    await fleet.close();
  }
}

function checkOptions({ devices, devicesPerSocket, concurrency, timeoutMs }: FleetOptions): void {
  const whole = { devices, devicesPerSocket, concurrency };
  for (const [name, value] of Object.entries(whole)) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`observe fan-out: ${name} must be a whole number ≥ 1, not ${value}`);
  }
  if (devicesPerSocket > MAX_DEVICES_PER_SOCKET) throw new Error(`observe fan-out: at most ${MAX_DEVICES_PER_SOCKET} devices per socket`);
  if (!(timeoutMs > 0)) throw new Error(`observe fan-out: timeoutMs must be positive, not ${timeoutMs}`);
}

/** Devices on their sockets and a ThingsBoard stand-in on the broker; each step acts on a range of devices (default all). */
export class ObserverFleet {
  private readonly devices: Device[] = [];
  private client: MqttClient | undefined;
  private delivered = new Tally();
  private published = new Tally();
  private repliesUpstream = new Tally();
  private confirmations = new Tally();
  /** Fan-outs so far: each round's RPCs have ids of their own, so a late one from an earlier round is not counted. */
  private round = 0;
  private fanoutStartedAt = NaN;
  private confirming = false;
  private confirmationKinds: Record<string, number> = {};
  private notFresher = 0;
  private repeatedRpcs = 0;
  private confirmable = 0;
  private nonConfirmable = 0;
  private duplicates = 0;
  private closed = false;

  private constructor(
    private readonly options: FleetOptions,
    private readonly links: readonly Link[],
  ) {
    for (let index = 0; index < options.devices; index++) {
      const link = links[Math.floor(index / options.devicesPerSocket)]!;
      this.devices.push({
        index,
        link,
        exchange: undefined,
        observing: false,
        rpcAt: NaN,
        replyUpstream: false,
        lastObserve: undefined,
        observeBefore: undefined,
        confirmedAt: NaN,
      });
    }
  }

  static async open(options: FleetOptions): Promise<ObserverFleet> {
    checkOptions(options);
    const { host, port, devices, devicesPerSocket } = options;
    const receiveBufferBytes = devicesPerSocket > 1 ? SHARED_SOCKET_BUFFER_BYTES : undefined;
    let fleet: ObserverFleet | undefined;
    const opened = await Promise.allSettled(
      Array.from({ length: Math.ceil(devices / devicesPerSocket) }, () =>
        Link.open(host, port, receiveBufferBytes, (link, datagram) => fleet?.receive(link, datagram)),
      ),
    );
    const links = opened.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
    const refused = opened.find((outcome) => outcome.status === 'rejected');
    if (refused) {
      // E.g. EMFILE under a low `ulimit -n`: the sockets that did open must not keep the caller alive.
      await Promise.all(links.map((link) => link.close()));
      throw refused.reason;
    }
    fleet = new ObserverFleet(options, links);
    try {
      // No reconnection: a broker that goes away shows up as missing PUBACKs and replies, not as a hang.
      fleet.client = await mqtt.connectAsync(options.mqttUrl, {
        clientId: `fanout-thingsboard-${process.pid}`,
        reconnectPeriod: 0,
        connectTimeout: options.timeoutMs,
      });
      fleet.client.on('error', () => {}); // a lost connection is seen in the counts
      fleet.client.on('message', (topic, payload) => fleet!.upstream(topic, payload));
    } catch (error) {
      await fleet.close();
      throw error;
    }
    return fleet;
  }

  get size(): number {
    return this.devices.length;
  }

  /** Idempotent: a scenario closes its fleet early to free the sockets, and again on the way out. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const tally of [this.delivered, this.published, this.repliesUpstream, this.confirmations]) tally.stop();
    await Promise.all(this.links.map((link) => link.close()));
    await this.client?.endAsync(true);
  }

  notificationCounts(): Pick<FanoutResult, 'confirmable' | 'nonConfirmable' | 'duplicates'> {
    return { confirmable: this.confirmable, nonConfirmable: this.nonConfirmable, duplicates: this.duplicates };
  }

  /**
   * Each device: CON GET /api/v1/tok-i/rpc with Observe 0, answered 2.03 with Observe; `concurrency` at once.
   */
  async register(range: DeviceRange = this.all()): Promise<RegistrationResult> {
    const failures: Record<string, number> = {};
    let registered = 0;
    const startedAt = performance.now();
    await this.forEach(range, async (device) => {
      const outcome = await this.request(device, OBSERVE, (messageId, token) => observeRpcRequest(messageId, token, device.index, 0));
      const failure = 'failure' in outcome ? outcome.failure : registrationFailure(outcome.answer);
      if (failure === undefined) {
        device.observing = true;
        device.lastObserve = 'answer' in outcome ? observeOf(outcome.answer) : undefined;
        registered++;
      } else {
        failures[failure] = (failures[failure] ?? 0) + 1;
      }
    });
    return { registered, registrationFailures: failures, registrationSeconds: (performance.now() - startedAt) / 1000 };
  }

  /** Each device: CON GET /api/v1/tok-i/rpc with Observe 1 and the registration's token (RFC 7641 §3.6). */
  async deregister(range: DeviceRange = this.all()): Promise<DeregistrationResult> {
    const failures: Record<string, number> = {};
    let deregistered = 0;
    const startedAt = performance.now();
    await this.forEach(range, async (device) => {
      const outcome = await this.request(device, OBSERVE, (messageId, token) => observeRpcRequest(messageId, token, device.index, 1));
      const failure = 'failure' in outcome ? outcome.failure : outcome.answer.code.startsWith('2.') ? undefined : outcome.answer.code;
      if (failure === undefined) {
        device.observing = false;
        deregistered++;
      } else {
        failures[failure] = (failures[failure] ?? 0) + 1;
      }
    });
    return { deregistered, failures, seconds: (performance.now() - startedAt) / 1000 };
  }

  /** From now on, the first notification each observing device in `range` hears is its confirmation. */
  expectConfirmations(range: DeviceRange = this.all()): void {
    this.confirmations.stop();
    this.confirmations = new Tally();
    this.confirmationKinds = {};
    this.notFresher = 0;
    this.repeatedRpcs = 0;
    for (const device of this.slice(range)) {
      device.confirmedAt = NaN;
      device.observeBefore = device.lastObserve;
    }
    this.confirming = true;
  }

  /** Waits until every observing device in `range` has its confirmation, or `timeoutMs`; times from `origin` (performance.now()). */
  async awaitConfirmations(range: DeviceRange, timeoutMs: number, origin: number, targetMs: number): Promise<ConfirmationResult> {
    const observing = this.slice(range).filter((device) => device.observing);
    const all = await this.confirmations.reached(observing.length, timeoutMs);
    const confirmed = observing.filter((device) => !Number.isNaN(device.confirmedAt));
    const latencyMs = summarize(Float64Array.from(confirmed, (device) => device.confirmedAt - origin));
    return {
      expected: observing.length,
      confirmed: confirmed.length,
      latencyMs,
      allWithinMs: all && observing.length > 0 ? latencyMs.max : null,
      withinTarget: confirmed.filter((device) => device.confirmedAt - origin <= targetMs).length,
      kinds: { ...this.confirmationKinds },
      notFresher: this.notFresher,
      repeatedRpcs: this.repeatedRpcs,
    };
  }

  /** One RPC per device on v1/gateway/rpc, QoS 1; waits for every PUBACK and every device's notification. */
  async fanOut(range: DeviceRange = this.all()): Promise<RpcRoundResult> {
    const targets = this.slice(range);
    const count = targets.length;
    const { timeoutMs } = this.options;
    this.round++;
    for (const device of targets) {
      device.rpcAt = NaN;
      device.replyUpstream = false;
    }
    for (const tally of [this.delivered, this.published, this.repliesUpstream]) tally.stop();
    this.delivered = new Tally();
    this.published = new Tally();
    let lastPubackAt = NaN;
    const onPuback = (): void => {
      lastPubackAt = performance.now();
      this.published.add();
    };
    this.fanoutStartedAt = performance.now();
    const [, , allDelivered] = await Promise.all([
      this.publishRpcs(targets, onPuback),
      this.published.reached(count, timeoutMs),
      this.delivered.reached(count, timeoutMs),
    ]);
    const latencies = Float64Array.from(
      targets.filter((device) => !Number.isNaN(device.rpcAt)),
      (device) => device.rpcAt - this.fanoutStartedAt,
    );
    const latencyMs = summarize(latencies);
    return {
      rpcsPublished: this.published.count,
      publishSeconds: (lastPubackAt - this.fanoutStartedAt) / 1000,
      delivered: this.delivered.count,
      deliveredWithinMs: allDelivered ? latencyMs.max : null,
      latencyMs,
    };
  }

  private async publishRpcs(targets: readonly Device[], onPuback: () => void): Promise<void> {
    const client = this.client!;
    for (let start = 0; start < targets.length; start += PUBLISH_BATCH) {
      for (const { index } of targets.slice(start, start + PUBLISH_BATCH)) {
        client.publish(RPC_TOPIC, rpcRequestMessage(index, this.rpcIdOf(index)), { qos: 1 }, (error) => {
          if (!error) onPuback();
        });
      }
      await nextTurn();
    }
  }

  /**
   * Every device in `range` that received this round's RPC answers it: CON POST /api/v1/tok-i/rpc/{id}. The
   * gateway publishes the replies on v1/gateway/rpc as `{"device","id","data"}`, the topic ThingsBoard sends
   * requests on.
   */
  async replyAll(range: DeviceRange = this.all()): Promise<RepliesResult> {
    const client = this.client!;
    this.repliesUpstream.stop();
    this.repliesUpstream = new Tally();
    // Only now: subscribed during the fan-out, this client would get all its own requests back.
    await client.subscribeAsync(RPC_TOPIC, { qos: 1 });
    const repliers = this.slice(range).filter((device) => !Number.isNaN(device.rpcAt));
    const firstSentAt = performance.now();
    await forEachBounded(repliers.length, this.options.concurrency, async (i) => {
      const device = repliers[i]!;
      const id = this.rpcIdOf(device.index);
      await this.request(device, REPLY, (messageId, token) => rpcReplyRequest(messageId, token, device.index, id));
    });
    const allArrived = await this.repliesUpstream.reached(repliers.length, this.options.timeoutMs);
    const lastArrivalAt = this.repliesUpstream.lastAt;
    await client.unsubscribeAsync(RPC_TOPIC);
    return {
      repliesUpstream: this.repliesUpstream.count,
      repliesWithinMs: allArrived && repliers.length > 0 ? lastArrivalAt - firstSentAt : null,
    };
  }

  private upstream(topic: string, payload: Buffer): void {
    const device = this.replyingDevice(topic, payload);
    if (!device || device.replyUpstream) return;
    device.replyUpstream = true;
    this.repliesUpstream.add();
  }

  /** The device whose reply this upstream message is, if it is one (requests share the topic). */
  private replyingDevice(topic: string, payload: Buffer): Device | undefined {
    if (topic !== RPC_TOPIC) return undefined;
    let body: { device?: unknown; id?: unknown; data?: unknown };
    try {
      body = JSON.parse(payload.toString()) as typeof body;
    } catch {
      return undefined;
    }
    const index = typeof body.device === 'string' ? /^dev-(\d+)$/.exec(body.device)?.[1] : undefined;
    const device = index === undefined ? undefined : this.devices[Number(index)];
    if (!device || body.id !== this.rpcIdOf(device.index) || body.data === undefined) return undefined;
    return device;
  }

  /** Each device gets an RPC id of its own per round, so a notification delivered to the wrong device or late is not counted. */
  private rpcIdOf(index: number): number {
    return this.round * this.devices.length + index + 1;
  }

  private all(): DeviceRange {
    return { start: 0, end: this.devices.length };
  }

  private slice({ start, end }: DeviceRange): Device[] {
    return this.devices.slice(start, end);
  }

  private async forEach(range: DeviceRange, task: (device: Device) => Promise<void>): Promise<void> {
    const devices = this.slice(range);
    await forEachBounded(devices.length, this.options.concurrency, (i) => task(devices[i]!));
  }

  private request(device: Device, kind: Kind, build: (messageId: number, token: Buffer) => Buffer): Promise<Outcome> {
    const messageId = device.link.nextMessageId();
    device.exchange = new Exchange(device.link, kind, messageId, build(messageId, tokenOf(kind, device.index)), this.options.timeoutMs);
    return device.exchange.done;
  }

  private receive(link: Link, datagram: Buffer): void {
    let packet: coapPacket.ParsedPacket;
    try {
      packet = coapPacket.parse(datagram);
    } catch {
      return;
    }
    // Acknowledged before anything else, known or not: otherwise the gateway retransmits, and in the end
    // drops the relation.
    if (packet.confirmable) link.send(emptyAck(packet.messageId));
    if (packet.reset) {
      link.exchanges.get(packet.messageId)?.settle({ failure: 'reset' });
      return;
    }
    if (packet.code === '0.00') {
      if (packet.ack) link.exchanges.get(packet.messageId)?.acknowledged();
      return;
    }
    const target = this.addressee(link, packet.token);
    if (!target) return;
    const { device, kind } = target;
    const { exchange } = device;
    if (exchange?.kind === kind && exchange.pending) {
      exchange.settle({ answer: packet }); // piggybacked or separate
    } else if (kind === OBSERVE && device.observing && !packet.ack) {
      this.notified(device, packet);
    }
  }

  /** The device a token names, if it is one of this socket's. */
  private addressee(link: Link, token: Buffer): { device: Device; kind: Kind } | undefined {
    if (token.length !== TOKEN_LENGTH) return undefined;
    const kind = token[0];
    const device = this.devices[token.readUInt32BE(1)];
    if (device?.link !== link || (kind !== OBSERVE && kind !== REPLY)) return undefined;
    return { device, kind };
  }

  private notified(device: Device, packet: coapPacket.ParsedPacket): void {
    if (packet.confirmable) this.confirmable++;
    else this.nonConfirmable++;
    const observe = observeOf(packet);
    if (this.confirming && Number.isNaN(device.confirmedAt)) this.confirmed(device, packet, observe);
    if (observe !== undefined) device.lastObserve = observe;
    // Other notifications (the periodic 2.03, a final 2.02) are counted by type only.
    if (!carriesRpc(packet, this.rpcIdOf(device.index))) return;
    if (!Number.isNaN(device.rpcAt)) {
      this.duplicates++;
      return;
    }
    device.rpcAt = performance.now();
    this.delivered.add();
  }

  private confirmed(device: Device, packet: coapPacket.ParsedPacket, observe: number | undefined): void {
    device.confirmedAt = performance.now();
    const kind = `${packet.code} ${packet.confirmable ? 'CON' : 'NON'}${observe === undefined ? ' without Observe' : ''}`;
    this.confirmationKinds[kind] = (this.confirmationKinds[kind] ?? 0) + 1;
    if (observe === undefined || (device.observeBefore !== undefined && !isFresher(device.observeBefore, observe))) this.notFresher++;
    if (!Number.isNaN(device.rpcAt) && carriesRpc(packet, this.rpcIdOf(device.index))) this.repeatedRpcs++;
    this.confirmations.add();
  }
}

/** One connected UDP socket and the devices behind it; its message ids count up so none repeats. */
class Link {
  /** CON requests in flight by message id: an empty ACK or a Reset names no token. */
  readonly exchanges = new Map<number, Exchange>();
  private messageId = randomInt(0x10000);
  private messageIdsTaken = 0;

  private constructor(private readonly socket: dgram.Socket) {}

  static async open(
    host: string,
    port: number,
    receiveBufferBytes: number | undefined,
    receive: (link: Link, datagram: Buffer) => void,
  ): Promise<Link> {
    const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    // A connected socket skips the address lookup on every send. Node hands a failed lookup to the
    // callback, though its type does not say so.
    await new Promise<void>((resolve, reject) => {
      socket.connect(port, host, (error?: Error) => {
        if (!error) return resolve();
        socket.close();
        reject(error);
      });
    });
    const link = new Link(socket);
    socket.on('message', (datagram) => receive(link, datagram));
    // ICMP port unreachable: nothing listens, so what is in flight will not be answered either.
    socket.on('error', (error: NodeJS.ErrnoException) => link.failAll(error.code ?? error.message));
    if (receiveBufferBytes) socket.setRecvBufferSize(receiveBufferBytes);
    return link;
  }

  nextMessageId(): number {
    if (++this.messageIdsTaken > 0x10000) throw new Error('observe fan-out: a socket used all 65,536 message ids; use fewer devices per socket');
    const id = this.messageId;
    this.messageId = (id + 1) & 0xffff;
    return id;
  }

  send(datagram: Buffer): void {
    this.socket.send(datagram);
  }

  failAll(reason: string): void {
    for (const exchange of [...this.exchanges.values()]) exchange.settle({ failure: reason });
  }

  close(): Promise<void> {
    this.failAll('closed');
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

/** A CON request: sent again every 2 s, at most twice, until ACKed; then answered, or timed out. */
class Exchange {
  readonly done: Promise<Outcome>;
  private resolve!: (outcome: Outcome) => void;
  private retransmissions = 0;
  private retransmitTimer: NodeJS.Timeout | undefined;
  private readonly deadline: NodeJS.Timeout;

  constructor(
    private readonly link: Link,
    readonly kind: Kind,
    private readonly messageId: number,
    private readonly datagram: Buffer,
    timeoutMs: number,
  ) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
    link.exchanges.set(messageId, this);
    this.deadline = setTimeout(() => this.settle({ failure: 'timeout' }), timeoutMs);
    this.transmit();
  }

  get pending(): boolean {
    return this.link.exchanges.get(this.messageId) === this;
  }

  /** An empty ACK: the answer follows as a separate response, so stop retransmitting. */
  acknowledged(): void {
    clearTimeout(this.retransmitTimer);
  }

  settle(outcome: Outcome): void {
    if (!this.pending) return;
    this.link.exchanges.delete(this.messageId);
    clearTimeout(this.retransmitTimer);
    clearTimeout(this.deadline);
    this.resolve(outcome);
  }

  private transmit(): void {
    this.link.send(this.datagram);
    if (this.retransmissions++ < MAX_RETRANSMISSIONS) this.retransmitTimer = setTimeout(() => this.transmit(), RETRANSMIT_AFTER_MS);
  }
}

/** Counts events; reached() resolves true once `target` have happened, or false at the timeout. */
class Tally {
  count = 0;
  /** performance.now() of the latest add(). */
  lastAt = NaN;
  private waiting: { readonly target: number; readonly finish: () => void } | undefined;

  add(): void {
    this.count++;
    this.lastAt = performance.now();
    if (this.waiting && this.count >= this.waiting.target) this.waiting.finish();
  }

  reached(target: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.waiting = undefined;
        resolve(this.count >= target);
      };
      const timer = setTimeout(finish, timeoutMs);
      this.waiting = { target, finish };
      if (this.count >= target) finish();
    });
  }

  /** Ends a wait early: the run is being torn down. */
  stop(): void {
    this.waiting?.finish();
  }
}

/** Runs task(0) … task(count-1), at most `concurrency` at once. */
async function forEachBounded(count: number, concurrency: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** ThingsBoard's server-side RPC to a gateway child (docs/thingsboard.md). */
function rpcRequestMessage(index: number, id: number): string {
  return JSON.stringify({ device: `dev-${index}`, data: { id, method: RPC_METHOD, params: { on: true } } });
}

function tokenOf(kind: Kind, index: number): Buffer {
  const token = Buffer.allocUnsafe(TOKEN_LENGTH);
  token[0] = kind;
  token.writeUInt32BE(index, 1);
  return token;
}

const uriPath = (...segments: string[]): coapPacket.NamedOption[] =>
  segments.map((segment) => ({ name: 'Uri-Path', value: Buffer.from(segment) }));

/** Observe 0 registers, 1 deregisters. */
function observeRpcRequest(messageId: number, token: Buffer, index: number, observe: 0 | 1): Buffer {
  return coapPacket.generate({
    code: 'GET',
    confirmable: true,
    messageId,
    token,
    options: [{ name: 'Observe', value: observe === 0 ? Buffer.alloc(0) : Buffer.from([1]) }, ...uriPath('api', 'v1', `tok-${index}`, 'rpc')],
  });
}

function rpcReplyRequest(messageId: number, token: Buffer, index: number, id: number): Buffer {
  return coapPacket.generate({
    code: 'POST',
    confirmable: true,
    messageId,
    token,
    options: [...uriPath('api', 'v1', `tok-${index}`, 'rpc', String(id)), { name: 'Content-Format', value: JSON_FORMAT }],
    payload: REPLY_BODY,
  });
}

/** Undefined when the registration took: a 2.xx carrying Observe (docs/device-api-coap.md#observing: 2.03 Valid). */
function registrationFailure(answer: coapPacket.ParsedPacket): string | undefined {
  if (!answer.code.startsWith('2.')) return answer.code;
  return answer.options.some((option) => option.name === 'Observe') ? undefined : `${answer.code} without Observe`;
}

/** The Observe option's value (0 to 3 bytes, big-endian), if the message has one. */
function observeOf(packet: coapPacket.ParsedPacket): number | undefined {
  const option = packet.options.find((each) => each.name === 'Observe');
  return option ? option.value.reduce((value, byte) => value * 256 + byte, 0) : undefined;
}

/** RFC 7641 §4.4: whether `next` is newer than `before` in 24-bit sequence arithmetic (the 128 s clause aside). */
function isFresher(before: number, next: number): boolean {
  const HALF = 1 << 23;
  return (before < next && next - before < HALF) || (before > next && before - next > HALF);
}

/** A notification of RPC `id`: 2.05 with `{"id","method","params"}`. */
function carriesRpc(packet: coapPacket.ParsedPacket, id: number): boolean {
  if (packet.code !== '2.05') return false;
  try {
    const body = JSON.parse(packet.payload.toString()) as { id?: unknown; method?: unknown };
    return body.id === id && body.method === RPC_METHOD;
  } catch {
    return false;
  }
}

function emptyAck(messageId: number): Buffer {
  return Buffer.from([0x60, 0, messageId >> 8, messageId & 0xff]);
}
