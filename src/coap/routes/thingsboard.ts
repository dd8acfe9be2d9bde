// ThingsBoard's CoAP device API (device-api.md §1–3): /api/v1/{token}/{feature}[/{id}] → bridge calls.
// The status codes and their order follow ThingsBoard's own transport, so firmware written for it keeps
// working; error answers add a short diagnostic ThingsBoard does not send.
import type { Logger } from 'pino';
import type { Bridge } from '../../bridge/index.js';
import type { DeviceRegistry } from '../../devices/registry.js';
import { LogOncePer, fingerprint } from '../../log.js';
import type { Device, UplinkOutcome } from '../../model.js';
import { parseAttributes, parseTelemetry, type Parsed } from '../../payload/thingsboard-json.js';
import { ContentFormat, Method, ResponseCode, type CodeByte } from '../codes.js';
import type { CoapRequest, CoapResponse } from '../request.js';

const FEATURES = ['telemetry', 'attributes', 'rpc', 'claim', 'provision', 'firmware', 'software'] as const;
type Feature = (typeof FEATURES)[number];

const CREATED: CoapResponse = { code: ResponseCode.Created };

const error = (code: CodeByte, diagnostic: string): CoapResponse => ({ code, payload: diagnostic });

export interface ThingsBoardRouteDeps {
  readonly registry: DeviceRegistry;
  readonly bridge: Bridge;
  readonly log: Logger;
}

export interface PathTarget {
  readonly token: string | undefined;
  readonly feature: Feature | undefined;
  /** The raw feature segment, for the error message when it is not one we know. */
  readonly featureSegment: string | undefined;
  readonly requestId: string | undefined;
}

/**
 * Positional segments after /api/v1: token, feature, optional request id. Three segments whose last is a
 * feature name are the token-less form (DTLS devices identified by their credentials).
 */
export function parseApiPath(segments: readonly string[]): PathTarget {
  const asFeature = (segment: string | undefined): Feature | undefined => {
    const lower = segment?.toLowerCase();
    return FEATURES.find((feature) => feature === lower);
  };
  if (segments.length >= 4) {
    return { token: segments[2], feature: asFeature(segments[3]), featureSegment: segments[3], requestId: segments[4] };
  }
  const tokenLess = segments.length === 3 ? asFeature(segments[2]) : undefined;
  if (tokenLess) return { token: undefined, feature: tokenLess, featureSegment: segments[2], requestId: undefined };
  return { token: segments[2], feature: undefined, featureSegment: undefined, requestId: undefined };
}

export function createThingsBoardRoute(deps: ThingsBoardRouteDeps) {
  const { registry, bridge, log } = deps;
  const unknownTokenLog = new LogOncePer(10 * 60_000);

  return function thingsBoardRoute(request: CoapRequest, segments: readonly string[]): CoapResponse | Promise<CoapResponse> {
    if (request.method !== Method.GET && request.method !== Method.POST) {
      return error(ResponseCode.MethodNotAllowed, 'only GET and POST are allowed');
    }
    const target = parseApiPath(segments);
    if (!target.feature) {
      return error(
        ResponseCode.BadRequest,
        target.featureSegment === undefined
          ? `missing feature: expected /api/v1/{token}/{${FEATURES.join('|')}}`
          : `unknown feature "${target.featureSegment}": expected one of ${FEATURES.join(', ')}`,
      );
    }
    if (target.feature === 'provision') return notYet('provisioning');
    if (target.token === undefined) {
      return error(ResponseCode.Unauthorized, 'no access token in the path: use /api/v1/{token}/' + target.feature);
    }
    const device = registry.findByToken(target.token);
    if (!device) {
      const tokenHash = fingerprint(target.token);
      const peer = request.peer.address;
      if (unknownTokenLog.first(peer)) {
        log.warn({ peer, tokenSha256Prefix: tokenHash }, 'request with an unknown access token refused (4.01); repeats from this address are not logged for 10 minutes');
      }
      return error(ResponseCode.Unauthorized, 'unknown access token');
    }

    switch (target.feature) {
      case 'telemetry':
        if (request.method !== Method.POST) return error(ResponseCode.BadRequest, 'telemetry accepts POST only');
        return forward(request, device, 'telemetry', () => parseTelemetry(request.payload, request.receivedAt), bridge.telemetry);
      case 'attributes':
        if (request.method !== Method.POST) return notYet('reading attributes (GET)');
        return forward(request, device, 'attributes', () => parseAttributes(request.payload), bridge.clientAttributes);
      case 'rpc':
        return notYet('RPC');
      case 'claim':
        return notYet('claiming');
      default:
        return notYet('firmware download');
    }
  };

  /** A checked uplink payload → the bridge → the device's answer. */
  function forward<T>(
    request: CoapRequest,
    device: Device,
    feature: string,
    parse: () => Parsed<T>,
    send: (device: Device, value: T) => Promise<UplinkOutcome>,
  ): CoapResponse | Promise<CoapResponse> {
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parse();
    if (!parsed.ok) {
      log.debug({ device: device.name, feature, reason: parsed.error }, 'payload refused (4.00)');
      return error(ResponseCode.BadRequest, parsed.error);
    }
    return send(device, parsed.value).then((outcome) => answer(outcome, device.name, feature));
  }

  function answer(outcome: UplinkOutcome, device: string, feature: string): CoapResponse {
    switch (outcome.status) {
      case 'delivered':
        log.debug({ device, feature }, 'delivered upstream (2.01)');
        return CREATED;
      case 'unavailable':
        log.debug({ device, feature, reason: outcome.reason }, 'upstream unavailable (5.03)');
        return { code: ResponseCode.ServiceUnavailable, payload: outcome.reason, maxAge: outcome.retryAfterSeconds };
      case 'too-large':
        log.debug({ device, feature, reason: outcome.reason }, 'too large for upstream (4.13)');
        return error(ResponseCode.RequestEntityTooLarge, outcome.reason);
    }
  }
}

function checkContentFormat(request: CoapRequest): CoapResponse | undefined {
  const format = request.contentFormat;
  if (format === undefined || format === ContentFormat.Json || format === ContentFormat.TextPlain) return undefined;
  return error(ResponseCode.UnsupportedContentFormat, `Content-Format ${format} is not supported; send JSON (50)`);
}

function notYet(what: string): CoapResponse {
  return error(ResponseCode.NotImplemented, `${what} is not supported by this gateway version yet`);
}
