// The CoAP front end: a CoAP request, read into the device API's words; the outcome, rendered as a CoAP
// answer. It knows CoAP (Uri-Path options, Content-Format numbers, Observe) and nothing of the operations.
import { Method } from '../../coap/codes.js';
import { continuesOrEnds, type CoapRequest, type CoapResponse, type RequestHandler } from '../../coap/request.js';
import type { DeviceApi } from '../../device-api/index.js';
import { OPERATIONS } from '../../device-api/operations.js';
import { mapAnswer, type Outcome } from '../../device-api/outcome.js';
import type { DeviceRequest } from '../../device-api/request.js';
import type { RequestLimits } from '../../device-api/limits.js';
import { observe, refusal, render, streamState } from './render.js';

const METHOD_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(Method).map(([name, code]) => [code, name]));

/**
 * The Content-Formats the gateway cannot read (RFC 7252 §12.3 registry numbers), answered 4.15. Every other
 * format, none included, is read as JSON, as ThingsBoard's JSON adaptor does: many embedded stacks send 42
 * (octet-stream) by default, and a body that is not JSON is 4.00 whatever it declares. CBOR and EXI are
 * binary encodings of structured data a device would not mean as JSON text; drop one from here once the
 * gateway can decode it.
 */
const UNREADABLE_FORMATS: ReadonlyMap<number, string> = new Map([
  [47, 'application/exi'],
  [60, 'application/cbor'],
  [63, 'application/cbor-seq'],
  [112, 'application/senml+cbor'],
  [113, 'application/sensml+cbor'],
]);

export function createCoapFrontEnd(api: DeviceApi): RequestHandler {
  const handler = (request: CoapRequest): CoapResponse | Promise<CoapResponse> => {
    const handled = api.handle(deviceRequest(request));
    request.operation = handled.operation;
    if (handled.device) request.authenticatedAs = handled.device.name;
    const answer = (outcome: Outcome): CoapResponse => {
      if (outcome.kind !== 'updates') return render(outcome);
      const { observation } = request;
      if (observation && handled.device) observe(observation, handled.device.name, outcome);
      return streamState(outcome.current());
    };
    return mapAnswer(handled.outcome, answer);
  };
  const classify = (request: CoapRequest): number => api.classify(deviceRequest(request));
  return Object.assign(handler, { operations: OPERATIONS, classify });
}

/** A CoAP request in the device API's words. */
export function deviceRequest(request: CoapRequest): DeviceRequest {
  return {
    method: METHOD_NAMES.get(request.method) ?? `${request.method >> 5}.${String(request.method & 31).padStart(2, '0')}`,
    segments: pathSegments(request.uriPath),
    query: request.uriQuery,
    body: request.payload,
    unsupportedFormat: unreadable(request.contentFormat),
    peer: request.peer,
    receivedAt: request.receivedAt,
    updates: request.observation ? 'open' : request.method === Method.GET && request.observe === 1 ? 'close' : undefined,
    continuation: continuesOrEnds(request),
    restored: request.restored === true,
  };
}

/** The 4.15 diagnostic for a format the gateway cannot read; undefined for every other (read as JSON). */
function unreadable(format: number | undefined): string | undefined {
  const name = format === undefined ? undefined : UNREADABLE_FORMATS.get(format);
  return name === undefined ? undefined : `Content-Format ${format} (${name}) is not supported; send JSON (50)`;
}

/** A Uri-Path option may itself hold slashes ("api/v1/TOKEN/telemetry"); both forms split alike. */
export function pathSegments(uriPath: readonly string[]): string[] {
  const segments: string[] = [];
  for (const option of uriPath) {
    if (!option.includes('/')) {
      if (option !== '') segments.push(option);
      continue;
    }
    for (const part of option.split('/')) if (part !== '') segments.push(part);
  }
  return segments;
}

/** The gateway-wide limit as the message layer asks it, before Block1 reassembly: a refusal is a 4.29 with Max-Age. */
export function coapAdmission(limits: Pick<RequestLimits, 'admitRequest'>): { admitRequest(now: number): CoapResponse | undefined } {
  return {
    admitRequest(now) {
      const refused = limits.admitRequest(now);
      return refused && refusal(refused);
    },
  };
}
