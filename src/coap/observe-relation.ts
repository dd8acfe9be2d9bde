// One Observe relation (RFC 7641) and the offer a registration makes to its handler: the state a relation
// carries between its messages. The registry that holds them (observe.ts) decides what happens to them.
import type { Deadline } from './deadlines.js';
import type { NotificationOutcome, ObservationEndReason, ObservationOffer, ObservationOptions, ObserveRelation } from './observe-api.js';
import type { JournalEntry, SavedObservation } from './observe-journal.js';
import type { CoapRequest, CoapResponse } from './request.js';
import type { Peer } from './transport.js';

// RFC 7641 §4.4: Observe carries the 24 low bits of the sequence number.
const SEQUENCE_MASK = 0xff_ffff;

/** What a relation asks of the registry that holds it. */
export interface RelationHost {
  notify(relation: Relation, response: CoapResponse): Promise<NotificationOutcome>;
  close(relation: Relation, reason: ObservationEndReason, final?: CoapResponse): void;
  writeFloor(relation: Relation, sequence: number): void;
}

/** What an offer asks of the registry when its handler accepts it. */
export interface OfferHost {
  accept(offer: Offer, options: ObservationOptions): Relation;
}

export interface Queued {
  readonly response: CoapResponse;
  readonly resolve: (outcome: NotificationOutcome) => void;
  /** The periodic liveness check: always CON. */
  readonly check: boolean;
}

export interface InFlight {
  readonly messageId: number;
  /** Absent for the registration's own separate response. */
  readonly item: Queued | undefined;
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
  /** When the peer last acknowledged a CON while its device was seen at another address (see sighted()). */
  answeredProbeAt = 0;
  /** Its place in the session store; undefined when nothing is written (store off, or a peer that cannot come back). */
  entry: JournalEntry | undefined;
  /** The floor of its Observe numbers as written, and the generation it was written in (observe-journal.ts). */
  floor = 0;
  floorGeneration = 0;
  /** The Observe number at which the floor is written again: halfway through its window. */
  floorAt = 0;
  /** The device's newest other address, while its current one is probed (see ObserveRegistry.sighted). */
  candidate: Peer | undefined;
  probe: Deadline | undefined;
  /** Restored for a peer that cannot be reached yet (a DTLS device before its new handshake): since when. */
  dormantSince: number | undefined;

  constructor(
    private readonly registry: RelationHost,
    /** peer.key#token: RFC 7641 §4.1 keys observers by endpoint and token. */
    public key: string,
    public peer: Peer,
    readonly token: Buffer,
    readonly confirmable: boolean,
    /** The registration's method and URI: with the peer, where a large notification waits for Block2 follow-ups. */
    readonly resource: string,
    /** Block2 size exponent for this observer (it may have asked for small blocks when registering). */
    readonly szx: number,
    readonly options: ObservationOptions,
    sequence: number,
    /** Accepted while the table was full: answered without Observe, then ended 'refused'. */
    readonly overCapacity: boolean,
    /** The registration as the handler saw it, to write down once the relation is live. */
    readonly registration: Pick<CoapRequest, 'uriPath' | 'uriQuery'>,
  ) {
    this.sequence = sequence;
  }

  get active(): boolean {
    return this.state !== 'ended';
  }

  /** Follows the peer: RFC 7959 ties Block2 follow-ups to the endpoint that asks. */
  get blockKey(): string {
    return `${this.peer.key} ${this.resource}`;
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
    if (this.entry && value === this.floorAt) this.registry.writeFloor(this, value);
    return value;
  }
}

export class Offer implements ObservationOffer {
  relation: Relation | undefined;
  answered = false;

  constructor(
    private readonly registry: OfferHost,
    readonly key: string,
    readonly peer: Peer,
    readonly request: Pick<CoapRequest, 'token' | 'confirmable' | 'uriPath' | 'uriQuery'>,
    readonly resource: string,
    readonly szx: number,
    readonly sequence: number,
    /** Set when the offer replays a relation from the session store. */
    readonly restored: { readonly entry: JournalEntry; readonly saved: SavedObservation } | undefined,
  ) {}

  accept(options: ObservationOptions): ObserveRelation {
    if (this.answered) throw new Error('Observe registration already answered: accept() before returning the response');
    // Accepting twice keeps the first relation (and its options): there is one relation per registration.
    this.relation ??= this.registry.accept(this, options);
    return this.relation;
  }
}
