// The device API's outcomes as CoAP answers: response codes, Max-Age on refusals that say when to come
// back, JSON bodies, and an update stream as an Observe relation tied to bridge subscriptions.
import type { Subscription } from '../../bridge/index.js';
import { ContentFormat, OptionNumber, ResponseCode, type CodeByte } from '../../coap/codes.js';
import type { ObservationOffer } from '../../coap/observe-api.js';
import type { CoapResponse } from '../../coap/request.js';
import type { Outcome, Problem, Refusal, UpdateSink } from '../../device-api/outcome.js';
import { encodeJson } from '../../json-safety.js';
import type { JsonValue } from '../../model.js';

/** What a replaced observation hears last: a newer registration took its place. */
export const REPLACED: CoapResponse = { code: ResponseCode.Deleted, payload: 'a newer observation of this device replaced this one' };
/** What an observation hears last when a reload removed its device or changed its credentials. */
export const REVOKED: CoapResponse = { code: ResponseCode.Unauthorized, payload: 'this device was removed or its credentials changed' };

const CODES: Readonly<Record<Problem, CodeByte>> = {
  'bad-request': ResponseCode.BadRequest,
  unauthorized: ResponseCode.Unauthorized,
  forbidden: ResponseCode.Forbidden,
  'not-found': ResponseCode.NotFound,
  'method-not-allowed': ResponseCode.MethodNotAllowed,
  'too-large': ResponseCode.RequestEntityTooLarge,
  'unsupported-format': ResponseCode.UnsupportedContentFormat,
  'too-many-requests': ResponseCode.TooManyRequests,
  unavailable: ResponseCode.ServiceUnavailable,
  timeout: ResponseCode.GatewayTimeout,
  'bad-gateway': ResponseCode.BadGateway,
  internal: ResponseCode.InternalServerError,
};

/**
 * A refusal: its code, the reason as an RFC 7252 §5.5.2 diagnostic (or the dialect's JSON error body, as
 * Content-Format 50), and Max-Age when it says when to retry (4.29, 5.03).
 */
export function refusal(refused: Refusal): CoapResponse {
  const code = CODES[refused.problem];
  const answer = refused.body === undefined ? { code, payload: refused.reason } : json(code, refused.body);
  return refused.retryAfterSeconds === undefined ? answer : { ...answer, maxAge: refused.retryAfterSeconds };
}

/** An outcome other than a stream. The front end ties a stream to its Observe relation (see observe). */
export function render(outcome: Exclude<Outcome, { kind: 'updates' }>): CoapResponse {
  switch (outcome.kind) {
    case 'accepted':
      return outcome.body === undefined ? CREATED : json(ResponseCode.Created, outcome.body);
    case 'content':
      return json(outcome.created ? ResponseCode.Created : ResponseCode.Content, outcome.body);
    case 'empty':
      return CONTENT;
    case 'package':
      return {
        code: ResponseCode.Content,
        contentFormat: ContentFormat.OctetStream,
        payload: outcome.data,
        options: [{ number: OptionNumber.ETag, value: outcome.etag }],
        reproducible: true,
      };
    case 'provisioned':
      // ThingsBoard's CoAP transport: 2.01 for credentials, 4.03 when provisioning is off, 4.00 otherwise.
      return json(outcome.result === 'success' ? ResponseCode.Created : outcome.result === 'disabled' ? ResponseCode.Forbidden : ResponseCode.BadRequest, outcome.body);
    case 'refused':
      return refusal(outcome.refusal);
  }
}

/**
 * The state of a stream as an answer: 2.05 with the current JSON, or 2.03 Valid when there is none yet
 * (the first answer to an RPC observation, docs/device-api-coap.md#observing).
 */
export function streamState(current: JsonValue | undefined): CoapResponse {
  return current === undefined ? VALID : json(ResponseCode.Content, current);
}

/**
 * Accepts a registration and ties its relation to the stream's bridge subscriptions, each ending the
 * other: the bridge's items become notifications, and a newer observation of the device ends this one
 * with 2.02.
 */
export function observe(offer: ObservationOffer, owner: string, stream: Extract<Outcome, { kind: 'updates' }>): void {
  let subscriptions: Subscription[] = [];
  const relation = offer.accept({
    owner,
    current: () => streamState(stream.current()),
    onEnd: () => subscriptions.forEach((subscription) => subscription.end()),
  });
  const sink: UpdateSink = {
    deliver: (body) => relation.notify(json(ResponseCode.Content, body)),
    replaced: () => relation.end(REPLACED),
    revoked: () => relation.end(REVOKED),
  };
  subscriptions = stream.open(sink);
  if (!relation.active) subscriptions.forEach((subscription) => subscription.end());
}

/**
 * A JSON answer or notification. Values from upstream are bounded where they arrive; should one still be
 * beyond encoding, the device hears 5.00 rather than the process dying on the way.
 */
export function json(code: CodeByte, value: JsonValue): CoapResponse {
  const text = encodeJson(value);
  if (text === undefined) return UNENCODABLE;
  return { code, contentFormat: ContentFormat.Json, payload: Buffer.from(text) };
}

const CREATED: CoapResponse = { code: ResponseCode.Created };
const CONTENT: CoapResponse = { code: ResponseCode.Content };
const VALID: CoapResponse = { code: ResponseCode.Valid };
const UNENCODABLE: CoapResponse = { code: ResponseCode.InternalServerError, payload: 'the gateway could not encode this answer as JSON' };
