// One device's MQTT connection: CONNECT authenticates it once, each PUBLISH becomes a DeviceRequest for
// the device API, each SUBSCRIBE to an update topic opens the device's stream, and every outcome is
// rendered as ThingsBoard's MQTT transport renders it (docs/device-api-mqtt.md). A QoS 1 PUBLISH is
// PUBACKed once its reading is safe, in the order the PUBLISHes came (MQTT 3.1.1 §4.6); a limit or an
// unavailable upstream pauses reading and retries the same message later instead of losing it.
import type { Socket } from 'node:net';
import type { IConnectPacket, IPublishPacket, ISubscribePacket, IUnsubscribePacket, Packet } from 'mqtt-packet';
import type { Logger } from 'pino';
import type { Subscription } from '../../bridge/index.js';
import type { MqttDialect, MqttGrant, PresentedClientCertificate } from '../../device-api/dialects/thingsboard-mqtt.js';
import type { DeviceApi } from '../../device-api/index.js';
import type { Outcome, Refusal } from '../../device-api/outcome.js';
import type { DeviceRequest } from '../../device-api/request.js';
import { encodeJson } from '../../json-safety.js';
import type { DeliveryResult, Device, JsonValue } from '../../model.js';
import { MqttFramer } from './framing.js';
import { MqttOutbound } from './outbound.js';
import type { PacketReader } from './packets.js';
import type { MqttSessions } from './sessions.js';
import { connackCode, PUBACK_REASON, sessionOf, subscribeFailure, type ConnectRefusal } from './versions.js';

export interface MqttConnectionOptions {
  readonly maxPacketBytes: number;
  /** A connection that has not sent CONNECT this long after opening is closed. */
  readonly connectTimeoutMs: number;
  /** PUBLISHes being handled at once before reading pauses. */
  readonly maxInflight: number;
  /** Bytes waiting in the socket for a device that does not read; beyond it the connection is closed. */
  readonly maxUnsentBytes: number;
}

/** What a connection needs from its server. */
export interface ConnectionContext {
  readonly api: Pick<DeviceApi, 'handle'>;
  readonly dialect: Pick<MqttDialect, 'connect' | 'answerTopic' | 'errorTopic'>;
  readonly bridge: { connected(device: Device, revoked: () => void): Subscription };
  readonly sessions: MqttSessions;
  readonly reader: PacketReader;
  readonly options: MqttConnectionOptions;
  readonly log: Logger;
  readonly counters: MqttCounters;
  /** The device is connected on this connection: an older connection of the same device is closed (ThingsBoard's one session per device). */
  claimDevice(name: string, connection: MqttConnection): void;
  releaseDevice(name: string, connection: MqttConnection): void;
  /** A refusal worth a warning (rate limited by the server). */
  warn(key: string, fields: Record<string, unknown>, message: string): void;
}

export interface MqttCounters {
  connacks: Record<'accepted' | 'refused', number>;
  publishes: Record<'accepted' | 'answered' | 'dropped' | 'refused' | 'retried', number>;
  delivered: Record<'acknowledged' | 'sent' | 'failed', number>;
  closed: Record<string, number>;
}

/** How long a closing connection may take to send its last packets. */
const FLUSH_GRACE_MS = 1_000;
/** How long a provisioning session stays open after its answer, as in ThingsBoard's transport. */
const PROVISIONING_LINGER_MS = 60_000;
/** MQTT 3.1.1 §3.1.2.10: the server disconnects a client silent for one and a half keep-alive periods. */
const KEEPALIVE_GRACE = 1.5;

interface OpenSubscription {
  readonly qos: 0 | 1;
  readonly streams: Subscription[];
}


export class MqttConnection {
  private readonly framer: MqttFramer;
  /** Packets read but not handled yet: reading pauses while a publish waits, so this stays short. */
  private readonly inbox: Packet[] = [];
  private device: Device | undefined;
  private provisioning = false;
  private clientKey: string | undefined;
  private persistent = false;
  private presence: Subscription | undefined;
  private readonly subscriptions = new Map<string, OpenSubscription>();
  /** QoS 2 PUBLISHes received and acknowledged (PUBREC), until their PUBREL. */
  private readonly exactlyOnce = new Set<number>();
  /** PUBLISHes being handled, and those waiting to retry (reading pauses while any waits). */
  private handling = 0;
  private waiting = 0;
  /** PUBACKs go out in the order their PUBLISHes came. */
  private acks: Promise<void> = Promise.resolve();
  private readonly timers = new Set<NodeJS.Timeout>();
  private keepaliveMs = 0;
  private lastReceivedAt = Date.now();
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private quiescing = false;
  /** Everything written to the device goes through it. */
  private readonly out: MqttOutbound;

  constructor(
    private readonly socket: Socket,
    private readonly address: string,
    private readonly certificate: PresentedClientCertificate | undefined,
    private readonly context: ConnectionContext,
    private readonly onClosed: (connection: MqttConnection) => void,
  ) {
    this.framer = new MqttFramer(context.options.maxPacketBytes);
    this.out = new MqttOutbound(socket, context.options.maxUnsentBytes, context.counters.delivered, (detail) => this.close('slow-reader', detail));
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => this.close('socket-error'));
    socket.on('close', () => this.close('peer-closed'));
    this.connectTimer = setTimeout(() => this.close('connect-timeout', 'no CONNECT in time'), context.options.connectTimeoutMs);
  }

  /** The device it speaks for, once connected. */
  get deviceName(): string | undefined {
    return this.device?.name;
  }

  /**
   * The gateway is stopping: nothing more is read, and what is in hand settles. Resolves once every
   * PUBLISH read so far has its PUBACK (or will never have one); the caller bounds the wait.
   */
  quiesce(): Promise<void> {
    this.quiescing = true;
    this.socket.pause();
    return this.acks;
  }

  /** CONNECT was accepted (a device's or a provisioning session). */
  get connected(): boolean {
    return this.device !== undefined || this.provisioning;
  }

  /**
   * Ends the connection (a takeover, a revoked device, the gateway stopping, a protocol error). `flush`:
   * what was just written (a refusing CONNACK, v2/fw/error) still goes out before the socket closes.
   */
  close(reason: string, detail?: string, flush = false): void {
    if (this.closed) return;
    this.closed = true;
    this.context.counters.closed[reason] = (this.context.counters.closed[reason] ?? 0) + 1;
    if (detail !== undefined) this.context.log.debug({ peer: this.address, device: this.device?.name, reason: detail }, 'MQTT connection closed');
    clearTimeout(this.connectTimer);
    clearTimeout(this.keepaliveTimer);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const { streams } of this.subscriptions.values()) streams.forEach((stream) => stream.end());
    this.subscriptions.clear();
    this.out.close();
    this.presence?.end();
    if (this.device) this.context.releaseDevice(this.device.name, this);
    if (this.persistent && this.clientKey !== undefined) this.context.sessions.touch(this.clientKey);
    this.inbox.length = 0;
    if (flush) {
      // end() uncorks and sends what is written, then FIN; a peer that does not close its side in a second is cut.
      this.socket.end();
      this.socket.setTimeout(FLUSH_GRACE_MS, () => this.socket.destroy());
    } else {
      this.socket.destroy();
    }
    this.onClosed(this);
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    this.lastReceivedAt = Date.now();
    const cut = this.framer.push(chunk);
    if (!cut.ok) return this.close('too-large', cut.reason);
    for (const frame of cut.frames) {
      const packet = this.context.reader.read(frame, this.out.version);
      if (packet instanceof Error) return this.close('malformed', `malformed packet: ${packet.message}`);
      this.inbox.push(packet);
    }
    this.pump();
  }

  /** Handles what has been read, unless a publish is waiting to be retried or too many are in hand. */
  private pump(): void {
    while (!this.closed && !this.quiescing && this.inbox.length > 0 && this.waiting === 0 && this.handling < this.context.options.maxInflight) {
      this.dispatch(this.inbox.shift()!);
    }
    if (this.closed || this.quiescing) return;
    const busy = this.inbox.length > 0;
    if (busy && !this.socket.isPaused()) this.socket.pause();
    else if (!busy && this.socket.isPaused()) this.socket.resume();
  }

  private dispatch(packet: Packet): void {
    if (packet.cmd === 'connect') return this.connect(packet);
    if (!this.device && !this.provisioning) return this.close('protocol', `${packet.cmd} before CONNECT`);
    switch (packet.cmd) {
      case 'publish':
        return this.publish(packet);
      case 'subscribe':
        return this.subscribe(packet);
      case 'unsubscribe':
        return this.unsubscribe(packet);
      case 'puback':
        return this.out.acknowledged(packet.messageId ?? -1);
      case 'pubrel':
        this.exactlyOnce.delete(packet.messageId ?? -1);
        return this.out.send({ cmd: 'pubcomp', messageId: packet.messageId ?? 0 });
      case 'pingreq':
        return this.out.send({ cmd: 'pingresp' });
      case 'disconnect':
        return this.close('disconnect');
      default:
        return this.close('protocol', `${packet.cmd} is not accepted from a device`);
    }
  }

  private connect(packet: IConnectPacket): void {
    if (this.device || this.provisioning) return this.close('protocol', 'a second CONNECT on the same connection');
    clearTimeout(this.connectTimer);
    this.out.version = packet.protocolVersion ?? 4;
    const refuse = (refusal: ConnectRefusal, detail: string): void => {
      this.context.counters.connacks.refused++;
      this.connack(connackCode(refusal, this.out.version), false);
      this.close(refusal, detail, true);
    };
    const { clean, persistent } = sessionOf(packet);
    if (persistent && packet.clientId === '') return refuse('identifier-rejected', 'a persistent session needs a client id');
    const grant: MqttGrant = this.context.dialect.connect({
      username: packet.username,
      clientId: packet.clientId,
      certificate: this.certificate,
      address: this.address,
      receivedAt: Date.now(),
    });
    if (grant.kind === 'refused') {
      // An unknown token was logged already where tokens are checked (with its fingerprint): one line per event.
      if (grant.code === 'bad-credentials') this.context.log.debug({ peer: this.address, reason: grant.reason }, 'MQTT connection refused');
      else this.context.warn(`connect ${this.address}`, { peer: this.address, reason: grant.reason }, 'MQTT connection refused (CONNACK "not authorized"); repeats from this address are not logged for 10 minutes');
      return refuse(grant.code, grant.reason);
    }
    this.keepaliveMs = (packet.keepalive ?? 0) * 1000 * KEEPALIVE_GRACE;
    this.armKeepalive();
    this.context.counters.connacks.accepted++;
    if (grant.kind === 'provisioning') {
      this.provisioning = true;
      this.connack(0, false);
      return;
    }
    this.connectDevice(grant.device, packet.clientId, clean, persistent);
  }

  /** CONNACK; in MQTT 5 it also tells the largest packet the gateway takes, so the client keeps under it. */
  private connack(code: number, sessionPresent: boolean): void {
    if (this.out.version === 5) {
      this.out.send({ cmd: 'connack', reasonCode: code, sessionPresent, ...(code === 0 ? { properties: { maximumPacketSize: this.context.options.maxPacketBytes } } : {}) });
    } else {
      this.out.send({ cmd: 'connack', returnCode: code, sessionPresent });
    }
  }

  private connectDevice(device: Device, clientId: string, clean: boolean, persistent: boolean): void {
    this.device = device;
    this.persistent = persistent;
    this.context.claimDevice(device.name, this);
    if (clientId !== '') this.clientKey = `${device.name}\u0000${clientId}`;
    this.presence = this.context.bridge.connected(device, () => this.close('revoked', 'the device was removed or its credentials changed'));
    // A session that is not to be kept is not resumed either (MQTT 5 with no session expiry: as clean).
    const saved = this.clientKey !== undefined ? this.context.sessions.resume(this.clientKey, clean || !persistent) : undefined;
    this.connack(0, saved !== undefined);
    this.context.log.debug({ device: device.name, peer: this.address, persistent: this.persistent, resumed: saved !== undefined }, 'MQTT device connected');
    // A resumed session's subscriptions are open again at once: RPCs queued meanwhile follow.
    for (const [filter, qos] of saved ?? []) this.openSubscription(filter, qos);
  }

  private publish(packet: IPublishPacket): void {
    // The gateway's CONNACK allowed no topic aliases (MQTT 5 §3.3.2.3.4: a protocol error).
    if (packet.properties?.topicAlias !== undefined) return this.close('protocol', 'a topic alias, though the gateway allows none');
    const messageId = packet.messageId ?? 0;
    // QoS 2: a PUBLISH sent again before its PUBREL is the same message (§4.3.3): acknowledged, not handled twice.
    if (packet.qos === 2 && this.exactlyOnce.has(messageId)) {
      this.acks = this.acks.then(() => this.out.send({ cmd: 'pubrec', messageId }));
      return;
    }
    const question = this.context.dialect.answerTopic(packet.topic);
    this.handling++;
    const outcome = this.handlePublish(packet).catch((error: unknown) => {
      // A dialect's mistake must not take the process down: this connection ends, the others go on.
      this.context.log.error({ err: error, device: this.device?.name, topic: packet.topic }, 'MQTT publish failed inside the gateway');
      this.close('internal');
      return undefined;
    });
    // A question (attribute request, client RPC, firmware chunk) is acknowledged on receipt; its answer
    // follows on its own topic. An uplink is acknowledged once it is safe, or dropped as ThingsBoard drops
    // it (a topic outside the API); undefined: the connection ended without it.
    const acknowledged = question !== undefined ? Promise.resolve(PUBACK_REASON.success) : outcome.then((settled) => ackReason(settled));
    void outcome.then((settled) => {
      this.handling--;
      if (settled && question !== undefined) this.answer(question, settled, packet);
      this.pump();
    });
    if (packet.qos === 0) return;
    if (packet.qos === 2) this.exactlyOnce.add(messageId);
    this.acks = this.acks
      .then(() => acknowledged)
      .then((reason) => {
        if (reason === undefined || this.closed) return;
        this.out.send({ cmd: packet.qos === 2 ? 'pubrec' : 'puback', messageId, ...(this.out.version === 5 ? { reasonCode: reason } : {}) });
      });
  }

  /**
   * The publish's outcome, retried after the seconds a limit or an unavailable upstream asks for (QoS 0
   * is not retried when upstream is unavailable: best effort). undefined: the connection ended first, or
   * the outcome closed it.
   */
  private async handlePublish(packet: IPublishPacket): Promise<Outcome | undefined> {
    for (;;) {
      const settled = await this.context.api.handle(this.request('POST', packet.topic, packet.payload)).outcome;
      if (this.closed) return undefined;
      if (settled.kind !== 'refused') {
        this.context.counters.publishes[settled.kind === 'accepted' ? 'accepted' : 'answered']++;
        return settled;
      }
      const { refusal } = settled;
      const retry = refusal.retryAfterSeconds !== undefined && (refusal.problem === 'too-many-requests' || packet.qos > 0);
      if (!retry) return this.refused(packet, refusal);
      this.context.counters.publishes.retried++;
      this.waiting++;
      await this.sleep(refusal.retryAfterSeconds! * 1000);
      this.waiting--;
      if (this.closed) return undefined;
    }
  }

  /**
   * A refused publish as ThingsBoard's transport treats it: a topic outside the API is acknowledged and
   * dropped; a payload it cannot take closes the connection (its default, without "send PUBACK on
   * validation failure"), except in MQTT 5 at QoS 1, where a PUBACK can say so; a question that found no
   * answer in time is simply not answered. undefined: the connection is closed for it.
   */
  private refused(packet: IPublishPacket, refusal: Refusal): Outcome | undefined {
    const { counters } = this.context;
    const device = this.device?.name;
    const told = this.out.version === 5 && packet.qos > 0 && ackReason({ kind: 'refused', refusal }) === PUBACK_REASON.payloadFormatInvalid;
    switch (told ? 'told' : refusal.problem) {
      case 'told':
      case 'not-found':
      case 'timeout':
      case 'bad-gateway':
      case 'unavailable':
        counters.publishes[told ? 'refused' : 'dropped']++;
        this.context.log.debug({ device, topic: packet.topic, reason: refusal.reason }, 'MQTT publish not taken');
        return { kind: 'refused', refusal };
      default:
        counters.publishes.refused++;
        this.context.warn(
          `publish ${device ?? this.address}`,
          { device, peer: this.address, topic: packet.topic, reason: refusal.reason },
          'MQTT publish refused: the connection is closed, as ThingsBoard closes it; repeats for this device are not logged for 10 minutes',
        );
        this.close('refused-publish', refusal.reason);
        return undefined;
    }
  }

  /**
   * An answer to a question, on the topic ThingsBoard answers on. A refused firmware chunk is told on
   * v2/fw/error as ThingsBoard's status word, then the connection closes, as ThingsBoard does; other
   * refusals have no answer.
   */
  private answer(topic: string, outcome: Outcome, question: IPublishPacket): void {
    if (this.closed) return;
    const qos = this.answerQos(topic);
    switch (outcome.kind) {
      case 'content':
        void this.out.publish(topic, encodeJson(outcome.body) ?? '', qos);
        return;
      case 'provisioned':
        void this.out.publish(topic, encodeJson(outcome.body) ?? '', qos);
        // ThingsBoard closes a provisioning session a minute after its answer.
        this.later(PROVISIONING_LINGER_MS, () => this.close('provisioned', undefined, true));
        return;
      case 'package':
        void this.out.publish(topic, outcome.data, qos);
        return;
      case 'refused': {
        const errors = this.context.dialect.errorTopic(question.topic);
        if (errors === undefined) return;
        void this.out.publish(errors, outcome.refusal.problem === 'not-found' ? 'NOT_FOUND' : 'FAILURE', this.answerQos(errors));
        this.close('package-refused', outcome.refusal.reason, true);
        return;
      }
      default:
        this.context.log.debug({ device: this.device?.name, topic: question.topic }, 'MQTT question without an answer');
    }
  }

  private subscribe(packet: ISubscribePacket): void {
    const granted = packet.subscriptions.map(({ topic, qos }) => this.openSubscription(topic, qos >= 1 ? 1 : 0));
    this.out.send({ cmd: 'suback', messageId: packet.messageId ?? 0, granted });
  }

  /** Opens (or re-opens) one subscription; returns the QoS granted, or SUBACK's failure code. */
  private openSubscription(filter: string, qos: 0 | 1): number {
    this.endSubscription(filter);
    const handled = this.context.api.handle({ ...this.request('GET', filter, Buffer.alloc(0)), updates: 'open' });
    const outcome = handled.outcome;
    // Subscriptions are answered at once: a promise here would be a dialect's mistake, refused alike.
    if (outcome instanceof Promise || outcome.kind === 'refused') {
      this.context.log.debug({ device: this.device?.name, filter, reason: outcome instanceof Promise ? 'not immediate' : outcome.refusal.reason }, 'MQTT subscription refused');
      return subscribeFailure(this.out.version);
    }
    const streams = outcome.kind === 'updates' ? outcome.open(this.sink(filter, qos)) : [];
    if (this.closed) {
      streams.forEach((stream) => stream.end());
      return subscribeFailure(this.out.version);
    }
    this.subscriptions.set(filter, { qos, streams });
    if (this.persistent && this.clientKey !== undefined) this.context.sessions.remember(this.clientKey, filter, qos);
    return qos;
  }

  private sink(filter: string, qos: 0 | 1) {
    return {
      deliver: (body: JsonValue): Promise<DeliveryResult> => {
        const message = body as { topic?: unknown; payload?: JsonValue };
        if (typeof message.topic !== 'string' || message.payload === undefined) return Promise.resolve('failed');
        return this.out.publish(message.topic, encodeJson(message.payload) ?? '', qos);
      },
      replaced: () => {
        // Another connection of the same device subscribed to the same stream: ThingsBoard's "latest wins".
        this.context.log.info({ device: this.device?.name, filter }, 'a newer subscription of this device took over this one');
        this.endSubscription(filter);
      },
      revoked: () => this.close('revoked', 'the device was removed or its credentials changed'),
    };
  }

  private unsubscribe(packet: IUnsubscribePacket): void {
    for (const filter of packet.unsubscriptions) {
      this.endSubscription(filter);
      if (this.clientKey !== undefined) this.context.sessions.forgetFilter(this.clientKey, filter);
    }
    this.out.send({ cmd: 'unsuback', messageId: packet.messageId ?? 0, granted: [] });
  }

  private endSubscription(filter: string): void {
    const open = this.subscriptions.get(filter);
    if (!open) return;
    this.subscriptions.delete(filter);
    open.streams.forEach((stream) => stream.end());
  }

  /**
   * The QoS of the device's subscription that covers an answer topic; 1 without one, as ThingsBoard sends
   * answers to a device that did not subscribe.
   */
  private answerQos(topic: string): 0 | 1 {
    const filter = topic.replace(/\/response\/[^/]+/, '/response/+').replace(/\/chunk\/[^/]+$/, '/chunk/+');
    return this.subscriptions.get(filter)?.qos ?? this.subscriptions.get(topic)?.qos ?? 1;
  }

  private request(method: 'POST' | 'GET', topic: string, payload: Buffer | string): DeviceRequest {
    return {
      method,
      segments: topic.split('/'),
      query: [],
      body: typeof payload === 'string' ? Buffer.from(payload) : payload,
      unsupportedFormat: undefined,
      peer: { address: this.address, ...(this.device ? { device: this.device } : {}) },
      receivedAt: Date.now(),
      updates: undefined,
      continuation: false,
      restored: false,
    };
  }

  private armKeepalive(): void {
    if (this.keepaliveMs <= 0) return;
    const check = (): void => {
      // While the gateway itself holds reading back (a limit, a retry), the device is not the silent one.
      if (this.socket.isPaused()) this.lastReceivedAt = Date.now();
      const silent = Date.now() - this.lastReceivedAt;
      if (silent >= this.keepaliveMs) return this.close('keepalive', `silent for ${silent} ms (keep-alive × 1.5)`);
      this.keepaliveTimer = setTimeout(check, this.keepaliveMs - silent);
    };
    this.keepaliveTimer = setTimeout(check, this.keepaliveMs);
  }

  /** A timer the connection owns: cleared when it closes. */
  private later(ms: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      run();
    }, ms);
    this.timers.add(timer);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.later(ms, resolve));
  }
}

/**
 * What the PUBACK of a publish's outcome says (MQTT 5; 3.1.1 sends a plain PUBACK): taken, a topic outside
 * the API (dropped, as ThingsBoard does), or a payload it cannot take. undefined: no PUBACK at all.
 */
function ackReason(settled: Outcome | undefined): number | undefined {
  if (!settled) return undefined;
  if (settled.kind !== 'refused') return PUBACK_REASON.success;
  switch (settled.refusal.problem) {
    case 'not-found':
      return PUBACK_REASON.topicNameInvalid;
    case 'bad-request':
    case 'too-large':
    case 'unsupported-format':
      return PUBACK_REASON.payloadFormatInvalid;
    default:
      return PUBACK_REASON.success;
  }
}
