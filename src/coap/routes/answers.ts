// CoAP answers every device dialect gives alike: JSON bodies, diagnostics, 5.03 with Max-Age, and an
// Observe relation tied to a bridge subscription.
import type { Subscription } from '../../bridge/index.js';
import type { ProvisionOutcome } from '../../bridge/provision.js';
import { encodeJson } from '../../json-safety.js';
import type { Device, JsonValue, Subscriber, UplinkOutcome } from '../../model.js';
import { ContentFormat, ResponseCode, type CodeByte } from '../codes.js';
import type { RequestLimits } from '../limits.js';
import type { ObservationOffer } from '../observe-api.js';
import type { CoapRequest, CoapResponse } from '../request.js';

/** What a replaced observation hears last: a newer registration took its place. */
export const REPLACED: CoapResponse = { code: ResponseCode.Deleted, payload: 'a newer observation of this device replaced this one' };
/** What an observation hears last when a reload removed its device or changed its credentials. */
export const REVOKED: CoapResponse = { code: ResponseCode.Unauthorized, payload: 'this device was removed or its credentials changed' };

/**
 * A JSON answer or notification. Values from upstream are bounded where they arrive; should one still be
 * beyond encoding, the device hears 5.00 rather than the process dying on the way.
 */
export function json(code: CodeByte, value: JsonValue): CoapResponse {
  const text = encodeJson(value);
  if (text === undefined) return UNENCODABLE;
  return { code, contentFormat: ContentFormat.Json, payload: Buffer.from(text) };
}

const UNENCODABLE: CoapResponse = { code: ResponseCode.InternalServerError, payload: 'the gateway could not encode this answer as JSON' };

export const error = (code: CodeByte, diagnostic: string): CoapResponse => ({ code, payload: diagnostic });

export function checkContentFormat(request: CoapRequest): CoapResponse | undefined {
  const format = request.contentFormat;
  if (format === undefined || format === ContentFormat.Json || format === ContentFormat.TextPlain) return undefined;
  return error(ResponseCode.UnsupportedContentFormat, `Content-Format ${format} is not supported; send JSON (50)`);
}

/** An uplink's outcome: `created` once it is safe, 5.03 with Max-Age, or 4.13. */
export function uplinkAnswer(outcome: UplinkOutcome, created: CoapResponse): CoapResponse {
  switch (outcome.status) {
    case 'accepted':
      return created;
    case 'unavailable':
      return unavailable(outcome);
    case 'too-large':
      return error(ResponseCode.RequestEntityTooLarge, outcome.reason);
  }
}

/**
 * 4.29 for a request from an address blocked for trying unknown tokens, asked before a token is looked
 * up so a guesser learns nothing; a DTLS identity already proved who the device is and is never blocked.
 */
export function refusedSource(limits: Pick<RequestLimits, 'refuseBlockedSource'>, request: CoapRequest): CoapResponse | undefined {
  return request.peer.credential ? undefined : limits.refuseBlockedSource(request.peer.address, request.receivedAt);
}

/** The provisioner's outcomes other than an answer, as every dialect gives them. */
export function provisioningTrouble(
  outcome: Extract<ProvisionOutcome, { status: 'timeout' | 'unavailable' | 'bad-answer' }>,
): CoapResponse {
  switch (outcome.status) {
    case 'timeout':
      return error(ResponseCode.GatewayTimeout, 'ThingsBoard did not answer the provisioning request in time');
    case 'unavailable':
      return unavailable(outcome);
    case 'bad-answer':
      return error(ResponseCode.BadGateway, outcome.reason);
  }
}

/** 5.03 with Max-Age: the device should try again no sooner than that. */
export function unavailable(outcome: { readonly reason: string; readonly retryAfterSeconds: number }): CoapResponse {
  return { code: ResponseCode.ServiceUnavailable, payload: outcome.reason, maxAge: outcome.retryAfterSeconds };
}

/** Makes bridge subscribers whose items become notifications of one Observe relation. */
export interface Notifications {
  subscriber<T>(toNotification: (item: T) => CoapResponse): Subscriber<T>;
}

/**
 * Accepts a registration and ties its relation to bridge subscriptions (one, or several feeding the same
 * relation), each ending the other: the bridge's items become notifications, and a newer observation of
 * the device ends this one with 2.02.
 */
export function startObservation(
  offer: ObservationOffer,
  device: Device,
  current: () => CoapResponse,
  subscribe: (notifications: Notifications) => Subscription | Subscription[],
): void {
  let subscriptions: Subscription[] = [];
  const relation = offer.accept({ owner: device.name, current, onEnd: () => subscriptions.forEach((subscription) => subscription.end()) });
  const made = subscribe({
    subscriber: (toNotification) => ({
      deliver: (item) => relation.notify(toNotification(item)),
      replaced: () => relation.end(REPLACED),
      revoked: () => relation.end(REVOKED),
    }),
  });
  subscriptions = Array.isArray(made) ? made : [made];
  if (!relation.active) subscriptions.forEach((subscription) => subscription.end());
}
