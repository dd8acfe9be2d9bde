// RFC 7641 Observe, server side: the list of observers and the delivery of notifications. The message
// layer offers each GET with Observe 0 to its handler, tells the registry when the registration's answer
// has gone out and passes on Resets; sequence numbers, the CON/NON choice, one CON in flight per relation,
// and the periodic liveness check all happen here. What a handler sees is in observe-api.ts.
import type { Logger } from 'pino';
import type { LRUCache } from 'lru-cache';
import { MessageType, ResponseCode, codeClass, codeToString } from './codes.js';
import type { ConfirmableSender, DeliveryOutcome } from './confirmable-sender.js';
import type { MessageIdAllocator } from './message-ids.js';
import type { NotificationOutcome, ObservationEndReason, ObservationOffer, ObservationOptions } from './observe-api.js';
import { nextFloorAt, restoredSequence, type JournalEntry, type ObservationJournal, type SavedObservation } from './observe-journal.js';
import { RelationRecorder } from './observe-recorder.js';
import { RelationsByOwner } from './relations-by-owner.js';
import { Offer, Relation, type OfferHost, type Queued, type RelationHost } from './observe-relation.js';
import type { CoapRequest, CoapResponse } from './request.js';
import { formatPeer, type Peer } from './transport.js';
import { FixedDelayDeadlines } from './deadlines.js';
import { LogOncePer } from '../log.js';
import { boundedCache } from '../bounded-cache.js';

export { Relation } from './observe-relation.js';

export interface ObserveOptions {
  /** A relation quiet this long gets a CON with the current state; a NON one gets CON at least this often. */
  readonly checkIntervalMs: number;
  /**
   * How long the old address of a device seen elsewhere has to acknowledge a CON before its relations
   * move to the new one (see sighted()). Default 4 s: the first transmission and one retransmission.
   */
  readonly moveProbeMs?: number;
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
  /** Observe relations held now (including registrations whose answer is being prepared). */
  observations: number;
  notifications: number;
  observationsEnded: number;
  /** Registrations accepted by a handler but answered without Observe (non-2.xx, or maxObservations). */
  observationsRefused: number;
  /** Relations that followed their device to a new address. */
  observationsMoved: number;
  /** Relations brought back from the session store at start. */
  observationsRestored: number;
}

// RFC 7252 §4.8.2: how long a NON may still draw a Reset.
const NON_LIFETIME_MS = 145_000;
// Past this many the oldest are forgotten; the periodic CON check still finds an observer that left.
const MAX_REMEMBERED_NONS = 50_000;
const FAILED: Promise<NotificationOutcome> = Promise.resolve('failed');
const ignore = (): void => {};

/**
 * After an address answered nothing for this long it no longer counts as the device's live endpoint: a
 * request from another address of the device probes it again. Within it, requests from other addresses
 * (a second socket of the same device: a one-shot coap-client beside an observing one) move nothing.
 */
const CONFIRMED_ENDPOINT_MS = 60_000;
const DEFAULT_MOVE_PROBE_MS = 4000;

export class ObserveRegistry implements RelationHost, OfferHost {
  private readonly relations = new Map<string, Relation>();
  private readonly byOwner = new RelationsByOwner();
  /** Over-capacity relations whose answer is still being prepared: they too must hear onEnd on stop(). */
  private readonly refusing = new Set<Relation>();
  /**
   * Recent NON notifications by peer.key#messageId, so a Reset to one ends its relation. Made on first use:
   * lru-cache allocates for its whole capacity, which deployments with CON observers never need.
   */
  private nonNotifications: LRUCache<string, Relation> | undefined;
  private readonly maxQueued: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly probes: FixedDelayDeadlines;
  private readonly warnings = new LogOncePer(10 * 60_000, 2);
  private readonly recorder = new RelationRecorder();

  constructor(
    private readonly options: ObserveOptions,
    private readonly wire: NotificationWire,
    private readonly stats: ObserveStats,
    private readonly log: Logger,
  ) {
    this.maxQueued = options.maxQueued ?? 100;
    this.probes = new FixedDelayDeadlines(options.moveProbeMs ?? DEFAULT_MOVE_PROBE_MS);
  }

  /** From now on live relations are written down there (and removed when they end). */
  useJournal(journal: ObservationJournal): void {
    this.recorder.use(journal);
  }

  /**
   * A GET with Observe 0. A relation with the same peer and token is replaced (RFC 7641 §4.1): it ends now,
   * before the handler runs, and the new one continues its sequence numbers so the observer never sees
   * them go back within 128 s (§3.4).
   */
  offer(peer: Peer, request: Pick<CoapRequest, 'token' | 'confirmable' | 'uriPath' | 'uriQuery'>, resource: string, szx: number): ObservationOffer {
    const key = relationKey(peer, request.token);
    const previous = this.relations.get(key);
    let sequence = 0;
    if (previous) {
      sequence = previous.sequence;
      this.close(previous, 'reregistered');
    }
    return new Offer(this, key, peer, request, resource, szx, sequence, undefined);
  }

  /**
   * A relation written down by an earlier run, replayed as its registration: the handler accepts it like a
   * new one, and it goes on with Observe numbers fresher than any the observer saw (restoredSequence).
   */
  offerRestored(peer: Peer, request: Pick<CoapRequest, 'token' | 'confirmable' | 'uriPath' | 'uriQuery'>, resource: string, entry: JournalEntry, saved: SavedObservation): ObservationOffer {
    const key = relationKey(peer, request.token);
    const previous = this.relations.get(key);
    if (previous) this.close(previous, 'reregistered');
    const sequence = restoredSequence(saved, this.recorder.generationOr(saved.generation));
    return new Offer(this, key, peer, request, resource, saved.szx, sequence, { entry, saved });
  }

  /** A GET with Observe 1 (RFC 7641 §3.6): the request itself is then handled as a plain GET. */
  deregister(peer: Peer, token: Buffer): void {
    const relation = this.relations.get(relationKey(peer, token));
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
      offer.resource,
      offer.szx,
      options,
      offer.sequence,
      overCapacity,
      { uriPath: offer.request.uriPath, uriQuery: offer.request.uriQuery },
    );
    if (offer.restored) {
      relation.entry = offer.restored.entry;
      relation.floor = offer.restored.saved.sequence;
      relation.floorGeneration = offer.restored.saved.generation;
      // This run's window starts where the restore put its numbers.
      relation.floorAt = nextFloorAt(offer.sequence);
    }
    if (overCapacity) {
      this.refusing.add(relation);
      return relation;
    }
    // Two registrations with one token can overlap when handlers are slow: the later accept wins.
    const other = this.relations.get(offer.key);
    if (other) this.close(other, 'reregistered');
    this.relations.set(offer.key, relation);
    if (options.owner !== undefined) this.byOwner.add(options.owner, relation);
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
    if (!relation || relation.state !== 'pending') {
      // A restored registration nobody accepted (its route refused it): nothing of it stays written.
      if (!relation && offer.restored) this.recorder.remove(offer.restored.entry);
      return undefined;
    }
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
    relation.inFlight = { messageId, item: undefined };
    return (outcome) => this.delivered(relation, messageId, outcome);
  }

  /**
   * A restored relation's replayed registration was answered with `current`: it is live again, and the
   * observer is asked to confirm it with a CON notification of that state (an RST or silence ends it).
   * A peer that cannot be reached yet (DTLS before the device's new handshake) waits, at most one check
   * interval, for its device to come back.
   */
  confirmRestored(relation: Relation, current: CoapResponse, hold: boolean): void {
    if (relation.state !== 'pending') return;
    this.activate(relation);
    this.stats.observationsRestored++;
    relation.queue.push({ response: current, resolve: ignore, check: true });
    if (hold || relation.peer.transport.reachable?.(relation.peer) === false) relation.dormantSince = Date.now();
    else this.pump(relation);
  }

  /** Restored relations held back (their transports were not listening yet) whose peers can be reached now. */
  wakeable(): Relation[] {
    const found: Relation[] = [];
    for (const relation of this.relations.values()) {
      if (relation.dormantSince !== undefined && relation.peer.transport.reachable?.(relation.peer) !== false) found.push(relation);
    }
    return found;
  }

  /** Sends what a held-back relation has waiting (its confirmation first), unless it ended or moved meanwhile. */
  wake(relation: Relation): void {
    if (relation.state !== 'active' || relation.dormantSince === undefined) return;
    if (relation.peer.transport.reachable?.(relation.peer) === false) return;
    relation.dormantSince = undefined;
    this.pump(relation);
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
   * A request authenticated as `owner` came from `peer`. Its relations on other addresses of the same
   * transport follow it there: NAT rebinding, a DHCP renewal or a restarted border router change a
   * device's address without it knowing that it should register again. A device may also use two sockets
   * at once (an observer and a one-shot sender), so the old address is asked first, with a CON carrying
   * the relation's token: acknowledged within moveProbeMs, the relation stays; reset or silent, it moves
   * with its token, Observe numbers and waiting notifications. An address that acknowledged within the
   * last minute is not asked again. An unreachable one (DTLS without a session) is not asked at all.
   */
  sighted(owner: string, peer: Peer): void {
    this.byOwner.forEachOf(owner, (relation) => this.follow(relation, peer));
  }

  private follow(relation: Relation, peer: Peer): void {
    if (relation.state !== 'active' || relation.peer.transport !== peer.transport) return;
    if (relation.peer.key === peer.key) {
      // The same endpoint: a relation waiting for its device's new DTLS session has it now.
      if (relation.dormantSince !== undefined && peer.transport.reachable?.(peer) !== false) {
        relation.peer = peer;
        relation.dormantSince = undefined;
        this.pump(relation);
      }
      // The old address speaks: it is alive, whatever the probe would have said.
      relation.candidate = undefined;
      if (relation.probe) this.probes.cancel(relation.probe);
      relation.probe = undefined;
      return;
    }
    relation.candidate = peer;
    if (relation.probe) return; // the running probe moves it to the newest address
    if (relation.dormantSince !== undefined || relation.peer.transport.reachable?.(relation.peer) === false) {
      this.move(relation);
      return;
    }
    if (Date.now() - relation.answeredProbeAt < CONFIRMED_ENDPOINT_MS) {
      relation.candidate = undefined;
      return;
    }
    relation.probe = this.probes.add(() => this.probeExpired(relation));
    // A CON already in flight asks the question; otherwise a check with the current state does.
    if (relation.inFlight === undefined) {
      let current: CoapResponse;
      try {
        current = relation.options.current();
      } catch {
        current = { code: ResponseCode.Content };
      }
      relation.queue.unshift({ response: current, resolve: ignore, check: true });
      this.pump(relation);
    }
  }

  /** The old address said nothing in time: the CON in flight there is withdrawn and the relation moves. */
  private probeExpired(relation: Relation): void {
    relation.probe = undefined;
    if (relation.state !== 'active' || relation.candidate === undefined) return;
    const inFlight = relation.inFlight;
    if (inFlight) {
      relation.inFlight = undefined;
      this.wire.confirmables.cancel(relation.peer, inFlight.messageId);
      // A notification goes again to the new address; a check has done its work.
      if (inFlight.item && !inFlight.item.check) relation.queue.unshift(inFlight.item);
    }
    this.move(relation);
  }

  private move(relation: Relation): void {
    const to = relation.candidate!;
    const from = relation.peer;
    relation.candidate = undefined;
    if (relation.probe) this.probes.cancel(relation.probe);
    relation.probe = undefined;
    relation.dormantSince = undefined;
    const key = relationKey(to, relation.token);
    const other = this.relations.get(key);
    if (other && other !== relation) this.close(other, 'reregistered');
    if (this.relations.get(relation.key) === relation) this.relations.delete(relation.key);
    relation.key = key;
    relation.peer = to;
    relation.answeredProbeAt = 0;
    this.relations.set(key, relation);
    this.stats.observationsMoved++;
    this.log.info(
      { device: relation.options.owner, from: formatPeer(from), to: formatPeer(to) },
      'Observe relation moved to the address the device now uses',
    );
    this.recorder.save(relation, true);
    this.pump(relation);
  }

  /**
   * Ends a relation once: what is in flight stops being retransmitted, what waits resolves 'failed',
   * `final` (from end()) goes out without Observe, and the owner hears onEnd. Only 'stopped' keeps what
   * the session store holds: that relation comes back at the next start.
   */
  close(relation: Relation, reason: ObservationEndReason, final?: CoapResponse): void {
    if (relation.state === 'ended') return;
    const wasLive = relation.state === 'active';
    relation.state = 'ended';
    if (this.relations.get(relation.key) === relation) {
      this.relations.delete(relation.key);
      this.stats.observations = this.relations.size;
    }
    if (relation.options.owner !== undefined) this.byOwner.delete(relation.options.owner, relation);
    if (relation.probe) this.probes.cancel(relation.probe);
    relation.probe = undefined;
    this.refusing.delete(relation);
    if (reason === 'refused') this.stats.observationsRefused++;
    else this.stats.observationsEnded++;
    if (reason !== 'stopped' && relation.entry) this.recorder.remove(relation.entry);

    const { inFlight, peer } = relation;
    relation.inFlight = undefined;
    if (inFlight?.item) {
      this.wire.confirmables.cancel(peer, inFlight.messageId);
      inFlight.item.resolve('failed');
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

  /**
   * Ends every relation with 'stopped' and clears the timers. A relation the session store holds comes back
   * at the next start and is told nothing; any other gets `final` (when given), so an RFC 7641 observer
   * knows to register again. Resolves when those finals are acknowledged, or after `waitMs`.
   */
  async stop(final?: CoapResponse, waitMs = 0): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.probes.clear();
    const farewells: Array<Promise<void>> = [];
    for (const relation of [...this.relations.values(), ...this.refusing]) {
      const told = final !== undefined && relation.state === 'active' && relation.entry?.kept !== true && relation.dormantSince === undefined;
      if (told) farewells.push(new Promise((resolve) => this.sendFinal(relation, final, () => resolve())));
      this.close(relation, 'stopped');
    }
    this.nonNotifications?.clear();
    if (farewells.length === 0 || waitMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(farewells), new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  /** Writes the floor of the relation's Observe numbers again, halfway through its window (see observe-journal.ts). */
  writeFloor(relation: Relation, sequence: number): void {
    this.recorder.writeFloor(relation, sequence);
  }

  private activate(relation: Relation): void {
    relation.state = 'active';
    relation.lastSentAt = relation.lastConAt = Date.now();
    this.recorder.save(relation, false);
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
    while (relation.state === 'active' && relation.inFlight === undefined && relation.dormantSince === undefined) {
      const item = relation.queue.shift();
      if (!item) return;
      this.transmit(relation, item);
    }
  }

  private transmit(relation: Relation, item: Queued): void {
    const now = Date.now();
    // RFC 7641 §4.5: even a NON observer gets a CON now and then, so one that went away is noticed.
    const confirmable = relation.confirmable || item.check || relation.probe !== undefined || now - relation.lastConAt >= this.options.checkIntervalMs;
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
      relation.inFlight = { messageId, item };
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
        if (relation.candidate) {
          // The old address is gone or no longer knows the relation, and the device spoke from another.
          relation.inFlight = undefined;
          if (inFlight.item && !inFlight.item.check) relation.queue.unshift(inFlight.item);
          this.move(relation);
          return;
        }
        this.close(relation, outcome);
        return;
      case 'acknowledged':
      case 'cancelled': // only if the message id was reused for another message: give up on this one
        relation.inFlight = undefined;
        if (outcome === 'acknowledged' && relation.probe) {
          // The old address is alive and knows the relation: a second endpoint of the device spoke.
          relation.answeredProbeAt = Date.now();
          this.probes.cancel(relation.probe);
          relation.probe = undefined;
          relation.candidate = undefined;
        }
        inFlight.item?.resolve(outcome === 'acknowledged' ? 'acknowledged' : 'failed');
        this.pump(relation);
        return;
    }
  }

  private rememberNon(relation: Relation, messageId: number): void {
    this.nonNotifications ??= boundedCache(MAX_REMEMBERED_NONS, { ttl: NON_LIFETIME_MS });
    this.nonNotifications.set(`${relation.peer.key}#${messageId}`, relation);
  }

  private sendFinal(relation: Relation, final: CoapResponse, done?: () => void): void {
    const { peer } = relation;
    const type = relation.confirmable ? MessageType.Confirmable : MessageType.NonConfirmable;
    const messageId = this.wire.messageIds.next(peer);
    let datagram: Buffer;
    try {
      datagram = this.wire.encode(relation, type, messageId, final, undefined);
    } catch (error) {
      this.log.error({ err: error, peer: formatPeer(peer) }, 'final Observe response could not be encoded; not sent');
      done?.();
      return;
    }
    // Retransmitted like any CON, but nobody waits for the outcome: the relation is over either way.
    if (type === MessageType.Confirmable) this.wire.confirmables.send(peer, messageId, datagram, done && (() => done()));
    else {
      peer.transport.send(peer, datagram);
      done?.();
    }
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
    for (const relation of [...this.relations.values()]) {
      if (relation.dormantSince !== undefined) {
        // Restored, and its device never came back to a reachable address within a check interval.
        if (now - relation.dormantSince >= this.options.checkIntervalMs) this.close(relation, 'timed-out');
        continue;
      }
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

/** RFC 7641 §4.1 keys observers by endpoint and token. */
function relationKey(peer: Peer, token: Buffer): string {
  return `${peer.key}#${token.toString('hex')}`;
}
