// What the device API answers, in no transport's words. A front end renders each outcome in its own
// protocol: CoAP response codes and options, HTTP statuses and headers (and next MQTT).
import type { Subscription } from '../bridge/index.js';
import type { DeliveryResult, JsonValue, UplinkOutcome } from '../model.js';
import type { Method } from './request.js';

/** Why a request is refused; each front end has one rendering per problem (CoAP 4.00, HTTP 400, ...). */
export type Problem =
  | 'bad-request'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'method-not-allowed'
  | 'too-large'
  | 'unsupported-format'
  | 'too-many-requests'
  | 'unavailable'
  | 'timeout'
  | 'bad-gateway'
  | 'internal';

/** A neutral refusal: what went wrong, in a sentence a technician can read, and when to come back. */
export interface Refusal {
  readonly problem: Problem;
  readonly reason: string;
  /** On too-many-requests and unavailable: whole seconds, at least 1, before a retry can succeed. */
  readonly retryAfterSeconds?: number;
  /** On method-not-allowed: the methods the path takes. */
  readonly allowed?: readonly Method[];
  /**
   * The dialect's own error body (thethings.io's {"status":"error","message":..}): front ends send it as
   * JSON instead of the one-line text diagnostic.
   */
  readonly body?: JsonValue;
}

/** Where a stream's items go: an Observe relation, a long-poll, (next) an MQTT subscription. */
export interface UpdateSink {
  deliver(body: JsonValue): Promise<DeliveryResult>;
  /** A newer subscription of the device took this one's place. */
  replaced(): void;
  /** The device was removed or its credentials changed (a reload). */
  revoked(): void;
}

export type Outcome =
  /** An uplink is safe (queued durably or acknowledged upstream); `body` when the dialect answers one. */
  | { readonly kind: 'accepted'; readonly body?: JsonValue }
  /** A JSON answer; `created` when the request made something (an activation). */
  | { readonly kind: 'content'; readonly body: JsonValue; readonly created?: boolean }
  /** An answer with nothing to say: an Observe deregistration's plain answer. */
  | { readonly kind: 'empty' }
  /** A slice of a firmware or software package, with its ETag. */
  | { readonly kind: 'package'; readonly data: Buffer; readonly etag: Buffer }
  /**
   * A provisioning answer in ThingsBoard's JSON whatever its status: the transports differ in the status
   * they give it (CoAP 2.01/4.00/4.03, HTTP 200/400/403), so the front end reads `result`.
   */
  | { readonly kind: 'provisioned'; readonly result: 'success' | 'refused' | 'disabled' | 'invalid'; readonly body: JsonValue }
  /**
   * A stream of updates (shared attributes, server-side RPCs): `current` is its state now (undefined: none
   * yet, as for RPCs), `open` subscribes the sink to the bridge.
   */
  | { readonly kind: 'updates'; readonly current: () => JsonValue | undefined; readonly open: (sink: UpdateSink) => Subscription[] }
  | { readonly kind: 'refused'; readonly refusal: Refusal };

export type Answer = Outcome | Promise<Outcome>;

/**
 * Applies `f` to an answer without making a synchronous one asynchronous: a CoAP answer ready at once goes
 * out in the ACK (piggybacked), so it must not wait for a microtask.
 */
export function mapAnswer<T>(answer: Answer, f: (outcome: Outcome) => T): T | Promise<T> {
  return answer instanceof Promise ? answer.then(f) : f(answer);
}

export function refuse(problem: Problem, reason: string, extra?: Omit<Refusal, 'problem' | 'reason'>): Outcome {
  return { kind: 'refused', refusal: { problem, reason, ...extra } };
}

/** Try again no sooner than retryAfterSeconds: upstream is away, or a limit is reached. */
export function retryLater(problem: 'unavailable' | 'too-many-requests', outcome: { readonly reason: string; readonly retryAfterSeconds: number }): Outcome {
  return refuse(problem, outcome.reason, { retryAfterSeconds: outcome.retryAfterSeconds });
}

/** An uplink's outcome from the bridge: accepted (with the dialect's body), unavailable, or too large. */
export function uplinkOutcome(outcome: UplinkOutcome, body?: JsonValue): Outcome {
  switch (outcome.status) {
    case 'accepted':
      return body === undefined ? ACCEPTED : { kind: 'accepted', body };
    case 'unavailable':
      return retryLater('unavailable', outcome);
    case 'too-large':
      return refuse('too-large', outcome.reason);
  }
}

const ACCEPTED: Outcome = { kind: 'accepted' };
