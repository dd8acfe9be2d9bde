// How an answer goes on the wire: its options in the order RFC 7252 numbers them, a diagnostic kept short,
// and the keys under which a sliced representation waits for its follow-ups.
import { OptionNumber, codeClass, type MessageType } from './codes.js';
import { encodeMessage, encodeUint, type CoapOption } from './message.js';
import type { CoapRequest, CoapResponse } from './request.js';
import type { Peer } from './transport.js';

/**
 * Diagnostic payloads (RFC 7252 §5.5.2: "short") are cut to this many characters, so an error answer
 * never echoes much of a request back, and always fits one block.
 */
const MAX_DIAGNOSTIC_CHARS = 200;

export function encodeResponse(type: MessageType, messageId: number, token: Buffer, response: CoapResponse): Buffer {
  const options: CoapOption[] = [];
  const payload = typeof response.payload === 'string' ? Buffer.from(response.payload, 'utf8') : response.payload;
  if (response.contentFormat !== undefined && payload && payload.length > 0) {
    options.push({ number: OptionNumber.ContentFormat, value: encodeUint(response.contentFormat) });
  }
  if (response.maxAge !== undefined) options.push({ number: OptionNumber.MaxAge, value: encodeUint(response.maxAge) });
  if (response.size1 !== undefined) options.push({ number: OptionNumber.Size1, value: encodeUint(response.size1) });
  if (response.options) options.push(...response.options);
  return encodeMessage({ type, code: response.code, messageId, token, options, payload });
}

/** An error's diagnostic cut to MAX_DIAGNOSTIC_CHARS: whatever a handler echoed, the answer stays small. */
export function shortDiagnostic(response: CoapResponse): CoapResponse {
  const { payload } = response;
  if (typeof payload !== 'string' || payload.length <= MAX_DIAGNOSTIC_CHARS || codeClass(response.code) < 4) return response;
  // Not between the two halves of a surrogate pair, which would encode as U+FFFD.
  const cut = MAX_DIAGNOSTIC_CHARS - (/[\ud800-\udbff]/.test(payload[MAX_DIAGNOSTIC_CHARS - 2]!) ? 2 : 1);
  return { ...response, payload: `${payload.slice(0, cut)}…` };
}

/** A request's method and URI: with the peer, where a sliced representation waits for follow-ups (RFC 7959). */
export const resourceOf = (request: Pick<CoapRequest, 'method' | 'uriPath' | 'uriQuery'>): string =>
  `${request.method} ${request.uriPath.join('/')}?${request.uriQuery.join('&')}`;

export const blockKey = (peer: Peer, request: CoapRequest): string => `${peer.key} ${resourceOf(request)}`;

export const withOption = (response: CoapResponse, number: number, value: Buffer): CoapResponse => ({
  ...response,
  options: response.options ? [...response.options, { number, value }] : [{ number, value }],
});
