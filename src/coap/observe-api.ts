// What a request handler sees of RFC 7641 Observe. The message layer owns the mechanics (relations keyed
// by peer and token, sequence numbers, CON/NON choice, retransmission, RST, Block2 of large notifications);
// a handler only accepts a registration and later says "notify this relation with that response".
import type { CoapResponse } from './request.js';
import type { Peer } from './transport.js';

/** Why a relation ended; the owner of the relation hears it once, through ObservationOptions.onEnd. */
export type ObservationEndReason =
  /** GET with Observe 1 from the same peer and token (RFC 7641 §3.6). */
  | 'deregistered'
  /** The peer answered a notification with RST (RFC 7641 §3.6, §4.5). */
  | 'reset'
  /** A CON notification was not acknowledged after MAX_RETRANSMIT retransmissions (RFC 7641 §4.5). */
  | 'timed-out'
  /** The same peer registered again with the same token: the new registration replaces this one. */
  | 'reregistered'
  /** The handler's answer to the registration was not a 2.xx, so no relation was ever established. */
  | 'refused'
  /** Ended by the gateway through ObserveRelation.end(). */
  | 'ended'
  /** The message layer stopped. */
  | 'stopped';

export type NotificationOutcome =
  /** A CON notification was acknowledged by the observer. */
  | 'acknowledged'
  /** A NON notification went out; nothing more can be known. */
  | 'sent'
  /** The relation ended before this notification was acknowledged (or before it could be sent at all). */
  | 'failed';

export interface ObservationOptions {
  /**
   * Who the relation belongs to (the device). A request the handler authenticated as the same owner from
   * another address of the same transport moves the relation there (CoapRequest.authenticatedAs).
   */
  readonly owner?: string;
  /**
   * The resource's current representation. Sent as a CON notification when the relation has been quiet
   * for the configured check interval, so an observer that vanished is found (RFC 7641 §4.5).
   */
  current(): CoapResponse;
  /** Called exactly once, when the relation ends for any reason. */
  onEnd(reason: ObservationEndReason): void;
}

/** Present on a GET request with Observe 0: the handler may accept it. */
export interface ObservationOffer {
  /**
   * Accepts the registration. The 2.xx response the handler returns for this request becomes the relation's
   * first message (carrying Observe); a non-2.xx answer ends it at once with reason 'refused'. So does a full
   * observer table (coap.maxObservations): the answer then goes out as a plain response.
   * Call it before the handler's answer is returned or resolved (later it throws); a second call returns
   * the same relation.
   */
  accept(options: ObservationOptions): ObserveRelation;
}

export interface ObserveRelation {
  readonly peer: Peer;
  /** A CON registration gets CON notifications, a NON one NON notifications (plus periodic CON checks). */
  readonly confirmable: boolean;
  /** False once the relation has ended. */
  readonly active: boolean;
  /**
   * Queues a notification with the next Observe number. Notifications are delivered in order, one CON in
   * flight at a time; a notify() before the registration's own response has gone out waits for it. At most
   * 100 wait per relation; beyond that the oldest waiting one resolves 'failed'. A non-2.xx response is
   * never a notification (RFC 7641 §4.2): it ends the relation like end(response) and resolves 'failed'.
   */
  notify(response: CoapResponse): Promise<NotificationOutcome>;
  /**
   * Ends the relation from the gateway's side; `final` (e.g. 2.02 Deleted) is sent without Observe, as a CON
   * or NON like the notifications. Before the registration's own response has gone out there is no final:
   * that response, then sent without Observe, already tells the observer. Idempotent.
   */
  end(final?: CoapResponse): void;
}
