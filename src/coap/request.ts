// What a request handler sees and returns: a request whose options have been checked and read once,
// and a response described by code and payload, leaving message types, ids and encoding to the layer.
import { isUtf8 } from 'node:buffer';
import { Method, OptionNumber, ResponseCode, type CodeByte } from './codes.js';
import { decodeBlock, type BlockOption } from './block.js';
import { decodeUint, type CoapOption, type IncomingMessage } from './message.js';
import type { ObservationOffer } from './observe-api.js';
import type { Peer } from './transport.js';

export interface CoapRequest {
  readonly peer: Peer;
  readonly method: CodeByte;
  readonly confirmable: boolean;
  readonly token: Buffer;
  /** Uri-Path option values as sent (one option may itself contain slashes). */
  readonly uriPath: readonly string[];
  readonly uriQuery: readonly string[];
  readonly contentFormat: number | undefined;
  readonly accept: number | undefined;
  readonly observe: number | undefined;
  readonly block1: BlockOption | undefined;
  readonly block2: BlockOption | undefined;
  readonly size1: number | undefined;
  /** RFC 9175 Request-Tag values (hex, joined): tell apart concurrent block-wise bodies to one URI. */
  readonly requestTag: string;
  /** The whole body: Block1 transfers are reassembled before a handler sees the request. */
  readonly payload: Buffer;
  /** Wall-clock time the (last) datagram arrived, in ms since the epoch. */
  readonly receivedAt: number;
  /** Set on a GET with Observe 0 (RFC 7641): the handler may accept it to start a relation. */
  readonly observation: ObservationOffer | undefined;
  /**
   * What the request asks for, as an index into the handler's `operations`: set by the handler (the
   * router) once it has read the path, read by the message layer to count the answer. Never the path.
   */
  operation?: number;
  /**
   * Set by the handler once it has authenticated the request as a device (a known token, or a DTLS
   * identity): that device's Observe relations follow the request's peer (NAT rebinding, a new port).
   * Never set for an unknown token.
   */
  authenticatedAs?: string;
  /**
   * A registration the gateway replays at start from its session store, not a datagram: the handler
   * checks it like any other (the token may have changed meanwhile) but counts no refusal against the
   * address, which did not send it.
   */
  readonly restored?: true;
}

export interface CoapResponse {
  readonly code: CodeByte;
  /** A string payload on an error response is sent as an RFC 7252 §5.5.2 diagnostic (no Content-Format). */
  readonly payload?: Buffer | string;
  readonly contentFormat?: number;
  /** Seconds; on 5.03 and 4.29 it tells the device when to try again. */
  readonly maxAge?: number;
  readonly size1?: number;
  /** Further options, e.g. the Block1 echo the message layer adds. */
  readonly options?: readonly CoapOption[];
  /**
   * The handler gives the same representation again for each block request, cheaply (a firmware image
   * held once for every device): Block2 follow-ups then come back to the handler instead of keeping a
   * copy per peer in the bounded Block2 cache. Give such a response its own ETag option.
   */
  readonly reproducible?: boolean;
}

export interface RequestHandler {
  (request: CoapRequest): CoapResponse | Promise<CoapResponse>;
  /** Labels of the values the handler puts in `request.operation`, for the request metrics. */
  readonly operations?: readonly string[];
  /** The operation of a request answered before the handler saw it (a 4.29, a 4.13, a Block1 2.31). */
  readonly classify?: (request: CoapRequest) => number;
}

/**
 * Requests that continue or end what was already admitted: a Block2 follow-up, an Observe deregistration.
 * Rate limits neither count nor refuse them, so a device is never cut off halfway or kept observing.
 */
export function continuesOrEnds(request: CoapRequest): boolean {
  return (request.method === Method.GET && request.observe === 1) || (request.block2 !== undefined && request.block2.num > 0);
}

export type Interpreted =
  | { readonly kind: 'request'; readonly request: CoapRequest }
  /** An option the gateway cannot honour: 4.02 Bad Option, or 5.05 for proxy requests (RFC 7252 §5.4.1, §5.7.2). */
  | { readonly kind: 'bad-option'; readonly code: CodeByte; readonly reason: string };

interface OptionRule {
  readonly name: string;
  readonly minLength: number;
  readonly maxLength: number;
  readonly repeatable: boolean;
}

// Options a request may carry and the gateway understands (lengths from RFC 7252 §5.10, RFC 7641, RFC 7959).
// Anything else that is critical (odd number) is refused with 4.02; anything else elective is ignored.
const RULES = new Map<number, OptionRule>([
  [OptionNumber.UriHost, { name: 'Uri-Host', minLength: 1, maxLength: 255, repeatable: false }],
  [OptionNumber.ETag, { name: 'ETag', minLength: 1, maxLength: 8, repeatable: true }],
  [OptionNumber.Observe, { name: 'Observe', minLength: 0, maxLength: 3, repeatable: false }],
  [OptionNumber.UriPort, { name: 'Uri-Port', minLength: 0, maxLength: 2, repeatable: false }],
  [OptionNumber.UriPath, { name: 'Uri-Path', minLength: 0, maxLength: 255, repeatable: true }],
  [OptionNumber.ContentFormat, { name: 'Content-Format', minLength: 0, maxLength: 2, repeatable: false }],
  [OptionNumber.UriQuery, { name: 'Uri-Query', minLength: 0, maxLength: 255, repeatable: true }],
  [OptionNumber.Accept, { name: 'Accept', minLength: 0, maxLength: 2, repeatable: false }],
  [OptionNumber.Block2, { name: 'Block2', minLength: 0, maxLength: 3, repeatable: false }],
  [OptionNumber.Block1, { name: 'Block1', minLength: 0, maxLength: 3, repeatable: false }],
  [OptionNumber.Size2, { name: 'Size2', minLength: 0, maxLength: 4, repeatable: false }],
  [OptionNumber.Size1, { name: 'Size1', minLength: 0, maxLength: 4, repeatable: false }],
  [OptionNumber.RequestTag, { name: 'Request-Tag', minLength: 0, maxLength: 8, repeatable: true }],
]);

/**
 * Most bytes of Uri-Path and Uri-Query together. The device API's longest URIs (a token, a feature, a
 * list of attribute keys) take a few hundred; a URI kept as a key (Block1 uploads, Block2 follow-ups)
 * must not let a stranger make the gateway hold 59 KB per request.
 */
export const MAX_URI_BYTES = 2048;

const UNSUPPORTED_CRITICAL: ReadonlyMap<number, string> = new Map([
  [OptionNumber.IfMatch, 'If-Match'],
  [OptionNumber.IfNoneMatch, 'If-None-Match'],
  [OptionNumber.OSCORE, 'OSCORE'],
  [OptionNumber.QBlock1, 'Q-Block1'],
  [OptionNumber.QBlock2, 'Q-Block2'],
]);

type BadOption = Extract<Interpreted, { kind: 'bad-option' }>;

/** The options of a request as they are read, one by one. */
interface RequestOptions {
  readonly uriPath: string[];
  readonly uriQuery: string[];
  contentFormat: number | undefined;
  accept: number | undefined;
  observe: number | undefined;
  block1: BlockOption | undefined;
  block2: BlockOption | undefined;
  size1: number | undefined;
  requestTag: string;
  uriBytes: number;
}

export function interpretRequest(message: IncomingMessage, peer: Peer, receivedAt: number): Interpreted {
  const read: RequestOptions = {
    uriPath: [],
    uriQuery: [],
    contentFormat: undefined,
    accept: undefined,
    observe: undefined,
    block1: undefined,
    block2: undefined,
    size1: undefined,
    requestTag: '',
    uriBytes: 0,
  };
  let previousNumber = -1;
  for (const option of message.options) {
    const { number, value } = option;
    if (number === OptionNumber.ProxyUri || number === OptionNumber.ProxyScheme) {
      return { kind: 'bad-option', code: ResponseCode.ProxyingNotSupported, reason: 'this gateway is not a proxy' };
    }
    const problem = unrecognised(number, value, number === previousNumber);
    previousNumber = number;
    if (problem !== undefined) {
      // Fatal when critical (odd number), ignored when elective.
      if ((number & 1) === 1) return { kind: 'bad-option', code: ResponseCode.BadOption, reason: problem };
      continue;
    }
    const bad = readOption(read, number, value);
    if (bad) return bad;
  }

  const { uriPath, uriQuery, contentFormat, accept, observe, block1, block2, size1, requestTag } = read;
  return {
    kind: 'request',
    request: {
      peer,
      method: message.code,
      confirmable: message.type === 0,
      token: message.token,
      uriPath,
      uriQuery,
      contentFormat,
      accept,
      observe,
      block1,
      block2,
      size1,
      requestTag,
      payload: message.payload,
      receivedAt,
      observation: undefined,
      operation: undefined,
    },
  };
}

/**
 * Why an option is "unrecognised" (RFC 7252 §5.4.3, §5.4.5): unknown, too long, too short, or repeated when
 * it may not be. Undefined when it is fine.
 */
function unrecognised(number: number, value: Buffer, repeated: boolean): string | undefined {
  const rule = RULES.get(number);
  if (!rule) {
    return UNSUPPORTED_CRITICAL.has(number) ? `option ${UNSUPPORTED_CRITICAL.get(number)} (${number}) is not supported` : `unknown critical option ${number}`;
  }
  if (repeated && !rule.repeatable) return `option ${rule.name} appears more than once`;
  if (value.length < rule.minLength || value.length > rule.maxLength) return `option ${rule.name} has an invalid length of ${value.length} bytes`;
  return undefined;
}

/** Options whose value is a number, and where it goes. */
const UINT_OPTIONS: ReadonlyMap<number, 'contentFormat' | 'accept' | 'observe' | 'size1'> = new Map([
  [OptionNumber.ContentFormat, 'contentFormat'],
  [OptionNumber.Accept, 'accept'],
  [OptionNumber.Observe, 'observe'],
  [OptionNumber.Size1, 'size1'],
]);

/** Takes one recognised option into `read`; a value the gateway cannot use refuses the request. */
function readOption(read: RequestOptions, number: number, value: Buffer): BadOption | undefined {
  const field = UINT_OPTIONS.get(number);
  if (field !== undefined) {
    read[field] = decodeUint(value);
    return undefined;
  }
  switch (number) {
    case OptionNumber.UriPath:
    case OptionNumber.UriQuery:
      read.uriBytes += value.length;
      if (read.uriBytes > MAX_URI_BYTES) {
        return { kind: 'bad-option', code: ResponseCode.BadRequest, reason: `request URI longer than ${MAX_URI_BYTES} bytes` };
      }
      if (number === OptionNumber.UriPath) {
        // Not checked: a segment that is not UTF-8 matches no token or feature (4.01, 4.04), and no path
        // segment goes upstream.
        read.uriPath.push(value.toString('utf8'));
        return undefined;
      }
      // Attribute keys go upstream from here: one read as U+FFFD would ask ThingsBoard for another key.
      if (!isUtf8(value)) return { kind: 'bad-option', code: ResponseCode.BadOption, reason: `a Uri-Query option is not valid UTF-8 (${value.length} bytes)` };
      read.uriQuery.push(value.toString('utf8'));
      return undefined;
    case OptionNumber.RequestTag:
      read.requestTag += `${value.toString('hex')};`;
      return undefined;
    case OptionNumber.Block1:
    case OptionNumber.Block2: {
      const block = decodeBlock(value);
      if (!block) return { kind: 'bad-option', code: ResponseCode.BadOption, reason: 'block option uses the reserved size exponent 7' };
      if (number === OptionNumber.Block1) read.block1 = block;
      else read.block2 = block;
      return undefined;
    }
    default:
      // Uri-Host, Uri-Port, ETag and Size2 are understood and need nothing from us.
      return undefined;
  }
}
