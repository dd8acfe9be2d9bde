// RFC 7641 Observe, server side: the list of observers and the delivery of notifications. The message
// layer offers each GET with Observe 0 to its handler, tells the registry when the registration's answer
// has gone out and passes on Resets; sequence numbers, the CON/NON choice, one CON in flight per relation,
// and the periodic liveness check all happen here. What a handler sees is in observe-api.ts.
import type { Logger } from 'pino';
import type { LRUCache } from 'lru-cache';
import { MessageType, codeClass, codeToString } from './codes.js';
import type { ConfirmableSender, DeliveryOutcome } from './confirmable-sender.js';
import type { MessageIdAllocator } from './message-ids.js';
import type {
  NotificationOutcome,
  ObservationEndReason,
  ObservationOffer,
  ObservationOptions,
  ObserveRelation,
} from './observe-api.js';
import type { CoapRequest, CoapResponse } from './request.js';
import { formatPeer, type Peer } from './transport.js';
import { LogOncePer } from '../log.js';
import { boundedCache } from '../bounded-cache.js';

export interface ObserveOptions {
  /** A relation quiet this long gets a CON with the current state; a NON one gets CON at least this often. */
  readonly checkIntervalMs: number;
  readonly maxObservations: number;
  /** Notifications waiting behind an unacknowledged CON, per relation; beyond it the oldest is dropped. */
  readonly maxQueued?: number;
}

/** What the registry needs from the message layer to put a relation's messages on the wire. */
export interface NotificationWire {
  readonly messageIds: MessageIdAllocator;
  readonly confirmables: ConfirmableSender;
  /** The datagram for `response` on this relation: its token, Block2 at its block size, Observe if given. */
  encode(relation: Relation, type: MessageType, messageId: number, response: CoapResponse, observe: number | undefined): Buffer;
}

export interface ObserveStats {
  observations: number;
  notifications: number;
  observationsEnded: number;
  observationsRefused: number;
}

// RFC 7252 §4.8.2: how long a NON may still draw a Reset.
const NON_LIFETIME_MS = 145_000;
// Past this many the oldest are forgotten; the periodic CON check still finds an observer that left.
const MAX_REMEMBERED_NONS = 50_000;
// RFC 7641 §4.4: Observe carries the 24 low bits of the sequence number.
const SEQUENCE_MASK = 0xff_ffff;
const FAILED: Promise<NotificationOutcome> = Promise.resolve('failed');
const ignore = (): void => {};

interface Queued {
  readonly response: CoapResponse;
  readonly resolve: (outcome: NotificationOutcome) => void;
  /** The periodic liveness check: always CON. */
  readonly check: boolean;
}

interface InFlight {
  readonly messageId: number;
  /** Absent for the registration's own separate response. */
  readonly resolve: ((outcome: NotificationOutcome) => void) | undefined;
}

/** A registration's answer is being prepared ('pending'), the relation is live ('active'), or it is over. */
type State = 'pending' | 'active' | 'ended';

export class Relation implements ObserveRelation {
  state: State = 'pending';
  /** Observe value of the next message: the registration's answer, then one per notification. */
  sequence: number;
  readonly queue: Queued[] = [];
  inFlight: InFlight | undefined;
  lastSentAt = 0;
  lastConAt = 0;

  constructor(
    private readonly registry: ObserveRegistry,
    /** peer.key#token: RFC 7641 §4.1 keys observers by endpoint and token. */
    readonly key: string,
    readonly peer: Peer,
    readonly token: Buffer,
    readonly confirmable: boolean,
    /** Where a large notification is kept for Block2 follow-ups: the registration's peer, method and URI. */
    readonly blockKey: string,
    /** Block2 size exponent for this observer (it may have asked for small blocks when registering). */
    readonly szx: number,
    readonly options: ObservationOptions,
    sequence: number,
    /** Accepted while the table was full: answered without Observe, then ended 'refused'. */
    readonly overCapacity: boolean,
  ) {
    this.sequence = sequence;
  }

  get active(): boolean {
    return this.state !== 'ended';
  }

  notify(response: CoapResponse): Promise<NotificationOutcome> {
    return this.registry.notify(this, response);
  }

  end(final?: CoapResponse): void {
    this.registry.close(this, 'ended', final);
  }

  /** Takes the Observe value for the next message. */
  nextSequence(): number {
    const value = this.sequence;
    this.sequence = (value + 1) & SEQUENCE_MASK;
    return value;
  }
}

class Offer implements ObservationOffer {
  relation: Relation | undefined;
  answered = false;

  constructor(
    private readonly registry: ObserveRegistry,
    readonly key: string,
    readonly peer: Peer,
    readonly request: Pick<CoapRequest, 'token' | 'confirmable'>,
    readonly blockKey: string,
    readonly szx: number,
    readonly sequence: number,
  ) {}

  accept(options: ObservationOptions): ObserveRelation {
    if (this.answered) throw new Error('Observe registration already answered: accept() before returning the response');
    // Accepting twice keeps the first relation (and its options): there is one relation per registration.
    this.relation ??= this.registry.accept(this, options);
    return this.relation;
  }
}

export class ObserveRegistry {
  private readonly relations = new Map<string, Relation>();
  /** Over-capacity relations whose answer is still being prepared: they too must hear onEnd on stop(). */
  private readonly refusing = new Set<Relation>();
  /**
   * Recent NON notifications by peer.key#messageId, so a Reset to one ends its relation. Made on first use:
   * lru-cache allocates for its whole capacity, which deployments with CON observers never need.
   */
  private nonNotifications: LRUCache<string, Relation> | undefined;
  private readonly maxQueued: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly warnings = new LogOncePer(10 * 60_000, 2);

  constructor(
    private readonly options: ObserveOptions,
    private readonly wire: NotificationWire,
    private readonly stats: ObserveStats,
    private readonly log: Logger,
  ) {
    this.maxQueued = options.maxQueued ?? 100;
  }

  /**
   * A GET with Observe 0. A relation with the same peer and token is replaced (RFC 7641 §4.1): it ends now,
   * before the handler runs, and the new one continues its sequence numbers so the observer never sees
   * them go back within 128 s (§3.4).
   */
  offer(peer: Peer, request: Pick<CoapRequest, 'token' | 'confirmable'>, blockKey: string, szx: number): ObservationOffer {
    const key = `${peer.key}#${request.token.toString('hex')}`;
    const previous = this.relations.get(key);
    let sequence = 0;
    if (previous) {
      sequence = previous.sequence;
      this.close(previous, 'reregistered');
    }
    return new Offer(this, key, peer, request, blockKey, szx, sequence);
  }

  /** A GET with Observe 1 (RFC 7641 §3.6): the request itself is then handled as a plain GET. */
  deregister(peer: Peer, token: Buffer): void {
    const relation = this.relations.get(`${peer.key}#${token.toString('hex')}`);
    if (relation) this.close(relation, 'deregistered');
  }

  accept(offer: Offer, options: ObservationOptions): Relation {
    const overCapacity = this.relations.size >= this.options.maxObservations;
    const relation = new Relation(
      this,
      offer.key,
      offer.peer,
      // A copy: the request's token is a view into its datagram, which a long relation should not keep.
      Buffer.from(offer.request.token),
      offer.request.confirmable,
      offer.blockKey,
      offer.szx,
      options,
      offer.sequence,
      overCapacity,
    );
    if (overCapacity) {
      this.refusing.add(relation);
      return relation;
    }
    // Two registrations with one token can overlap when handlers are slow: the later accept wins.
    const other = this.relations.get(offer.key);
    if (other) this.close(other, 'reregistered');
    this.relations.set(offer.key, relation);
    this.stats.observations = this.relations.size;
    this.sweepTimer ??= this.startSweep();
    return relation;
  }

  /**
   * The handler answered a registration. Returns the relation whose first message this answer is (it then
   * carries Observe), or undefined when it goes out as a plain response: nothing accepted, a non-2.xx
   * answer, or no room for another relation (RFC 7641 §4.1 lets a server decline that way).
   */
  conclude(observation: ObservationOffer, response: CoapResponse): Relation | undefined {
    // Only the message layer puts offers on requests, and they are all Offers.
    const offer = observation as Offer;
    offer.answered = true;
    const relation = offer.relation;
    if (!relation || relation.state !== 'pending') return undefined;
    if (relation.overCapacity) {
      this.refusing.delete(relation);
      if (this.warnings.first('capacity')) {
        this.log.warn(
          { maxObservations: this.options.maxObservations },
          'too many Observe relations (coap.maxObservations): new registrations are answered without Observe. Raise the limit if this many observers are expected',
        );
      }
    }
    if (relation.overCapacity || codeClass(response.code) !== 2) {
      this.close(relation, 'refused');
      return undefined;
    }
    return relation;
  }

  /** The registration's answer went out piggybacked (no message id) or as a NON: the relation is live. */
  registered(relation: Relation, nonMessageId?: number): void {
    if (relation.state !== 'pending') return;
    this.activate(relation);
    if (nonMessageId !== undefined) this.rememberNon(relation, nonMessageId);
    this.pump(relation);
  }

  /**
   * The registration's answer is going out as a separate CON: the relation is live, but notifications
   * wait for its ACK like for any CON. Returns the callback for its delivery outcome.
   */
  registeredConfirmable(relation: Relation, messageId: number): (outcome: DeliveryOutcome) => void {
    if (relation.state !== 'pending') return ignore;
    this.activate(relation);
    relation.inFlight = { messageId, resolve: undefined };
    return (outcome) => this.delivered(relation, messageId, outcome);
  }

  notify(relation: Relation, response: CoapResponse): Promise<NotificationOutcome> {
    if (relation.state === 'ended') return FAILED;
    if (codeClass(response.code) !== 2) {
      // RFC 7641 §4.2: an error is never a notification; it ends the relation and goes out without Observe.
      this.close(relation, 'ended', response);
      return FAILED;
    }
    return new Promise((resolve) => {
      this.enqueue(relation, { response, resolve, check: false });
    });
  }

  /** A Reset that matched no CON in flight: if it answers a recent NON notification, that relation ends. */
  resetFromPeer(peer: Peer, messageId: number): void {
    if (!this.nonNotifications?.size) return;
    const key = `${peer.key}#${messageId}`;
    const relation = this.nonNotifications.get(key);
    if (!relation) return;
    this.nonNotifications.delete(key);
    this.close(relation, 'reset');
  }

  /**
   * Ends a relation once: what is in flight stops being retransmitted, what waits resolves 'failed',
   * `final` (from end()) goes out without Observe, and the owner hears onEnd.
   */
  close(relation: Relation, reason: ObservationEndReason, final?: CoapResponse): void {
    if (relation.state === 'ended') return;
    const wasLive = relation.state === 'active';
    relation.state = 'ended';
    if (this.relations.get(relation.key) === relation) {
      this.relations.delete(relation.key);
      this.stats.observations = this.relations.size;
    }
    this.refusing.delete(relation);
    if (reason === 'refused') this.stats.observationsRefused++;
    else this.stats.observationsEnded++;

    const { inFlight, peer } = relation;
    relation.inFlight = undefined;
    if (inFlight?.resolve) {
      this.wire.confirmables.cancel(peer, inFlight.messageId);
      inFlight.resolve('failed');
    }
    // A separate registration answer in flight is left to finish: it still answers the observer's request.
    for (const queued of relation.queue.splice(0)) queued.resolve('failed');
    // Before the registration's answer is out, that answer (without Observe) already says "no relation".
    if (final && wasLive) this.sendFinal(relation, final);

    try {
      relation.options.onEnd(reason);
    } catch (error) {
      this.log.error({ err: error, peer: formatPeer(peer) }, 'Observe onEnd callback failed');
    }
  }

  /** Ends every relation with 'stopped' and clears the sweep; nothing is sent. */
  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const relation of [...this.relations.values(), ...this.refusing]) this.close(relation, 'stopped');
    this.nonNotifications?.clear();
  }

  private activate(relation: Relation): void {
    relation.state = 'active';
    relation.lastSentAt = relation.lastConAt = Date.now();
  }

  private enqueue(relation: Relation, item: Queued): void {
    relation.queue.push(item);
    if (relation.queue.length > this.maxQueued) {
      relation.queue.shift()!.resolve('failed');
      this.log.debug({ peer: formatPeer(relation.peer), maxQueued: this.maxQueued }, 'Observe notification queue full; oldest notification dropped');
    }
    this.pump(relation);
  }

  /** Sends what waits, in order, until a CON is in flight (RFC 7641 §4.5.1: one at a time). */
  private pump(relation: Relation): void {
    while (relation.state === 'active' && relation.inFlight === undefined) {
      const item = relation.queue.shift();
      if (!item) return;
      this.transmit(relation, item);
    }
  }

  private transmit(relation: Relation, item: Queued): void {
    const now = Date.now();
    // RFC 7641 §4.5: even a NON observer gets a CON now and then, so one that went away is noticed.
    const confirmable = relation.confirmable || item.check || now - relation.lastConAt >= this.options.checkIntervalMs;
    const { peer } = relation;
    const observe = relation.nextSequence();
    const messageId = this.wire.messageIds.next(peer);
    let datagram: Buffer;
    try {
      datagram = this.wire.encode(relation, confirmable ? MessageType.Confirmable : MessageType.NonConfirmable, messageId, item.response, observe);
    } catch (error) {
      this.log.error({ err: error, peer: formatPeer(peer), code: codeToString(item.response.code) }, 'Observe notification could not be encoded; dropped');
      item.resolve('failed');
      return;
    }
    this.stats.notifications++;
    relation.lastSentAt = now;
    if (confirmable) {
      relation.lastConAt = now;
      relation.inFlight = { messageId, resolve: item.resolve };
      this.wire.confirmables.send(peer, messageId, datagram, (outcome) => this.delivered(relation, messageId, outcome));
    } else {
      peer.transport.send(peer, datagram);
      this.rememberNon(relation, messageId);
      item.resolve('sent');
    }
  }

  private delivered(relation: Relation, messageId: number, outcome: DeliveryOutcome): void {
    const inFlight = relation.inFlight;
    if (relation.state === 'ended' || inFlight?.messageId !== messageId) return;
    switch (outcome) {
      case 'reset':
      case 'timed-out':
        this.close(relation, outcome);
        return;
      case 'acknowledged':
      case 'cancelled': // only if the message id was reused for another message: give up on this one
        relation.inFlight = undefined;
        inFlight.resolve?.(outcome === 'acknowledged' ? 'acknowledged' : 'failed');
        this.pump(relation);
        return;
    }
  }

  private rememberNon(relation: Relation, messageId: number): void {
    this.nonNotifications ??= boundedCache(MAX_REMEMBERED_NONS, { ttl: NON_LIFETIME_MS });
    this.nonNotifications.set(`${relation.peer.key}#${messageId}`, relation);
  }

  private sendFinal(relation: Relation, final: CoapResponse): void {
    const { peer } = relation;
    const type = relation.confirmable ? MessageType.Confirmable : MessageType.NonConfirmable;
    const messageId = this.wire.messageIds.next(peer);
    let datagram: Buffer;
    try {
      datagram = this.wire.encode(relation, type, messageId, final, undefined);
    } catch (error) {
      this.log.error({ err: error, peer: formatPeer(peer) }, 'final Observe response could not be encoded; not sent');
      return;
    }
    // Retransmitted like any CON, but nobody waits for the outcome: the relation is over either way.
    if (type === MessageType.Confirmable) this.wire.confirmables.send(peer, messageId, datagram);
    else peer.transport.send(peer, datagram);
  }

  /** One timer for all relations; a relation is checked within a tenth of the interval after it falls due. */
  private startSweep(): NodeJS.Timeout {
    const period = Math.max(1000, Math.min(60_000, Math.floor(this.options.checkIntervalMs / 10)));
    const timer = setInterval(() => this.sweep(), period);
    timer.unref();
    return timer;
  }

  private sweep(): void {
    const now = Date.now();
    for (const relation of this.relations.values()) {
      if (relation.state !== 'active' || relation.inFlight || relation.queue.length > 0) continue;
      if (now - relation.lastSentAt < this.options.checkIntervalMs) continue;
      let current: CoapResponse;
      try {
        current = relation.options.current();
      } catch (error) {
        if (this.warnings.first('current')) {
          this.log.warn({ err: error, peer: formatPeer(relation.peer) }, 'Observe current() failed; liveness check skipped');
        }
        continue;
      }
      if (codeClass(current.code) !== 2) this.close(relation, 'ended', current);
      else this.enqueue(relation, { response: current, resolve: ignore, check: true });
    }
  }
}
