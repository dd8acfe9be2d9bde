// ThingsBoard's CoAP device API (docs/device-api-coap.md): /api/v1/{token}/{feature}[/{id}] → bridge calls.
// The status codes and their order follow ThingsBoard's own transport, so firmware written for it keeps
// working; error answers add a short diagnostic ThingsBoard does not send.
import type { Logger } from 'pino';
import { packageDiagnostic, type Bridge, type PackageKind } from '../../bridge/index.js';
import type { Provisioner } from '../../bridge/provision.js';
import type { DeviceRegistry } from '../../devices/registry.js';
import type { TokenCheck } from '../../devices/token-check.js';
import { imageSlice } from '../../firmware/image-store.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall, UplinkOutcome } from '../../model.js';
import {
  parseAttributeKeys,
  parseAttributes,
  parseClaim,
  parseClientRpc,
  parseRpcId,
  parseRpcReply,
  parseTelemetry,
  type Parsed,
} from '../../payload/thingsboard-json.js';
import { parseFirmwareQuery, parseProvisionRequest, provisionFailure, type ProvisionAnswer } from '../../payload/provision.js';
import { ContentFormat, Method, OptionNumber, ResponseCode, type CodeByte } from '../codes.js';
import { continuesOrEnds, type RequestLimits } from '../limits.js';
import type { CoapRequest, CoapResponse } from '../request.js';
import { checkContentFormat, error, json, provisioningTrouble, refusedSource, startObservation, unavailable, uplinkAnswer } from './answers.js';
import { Operation, type Route } from './index.js';

const FEATURES = ['telemetry', 'attributes', 'rpc', 'claim', 'provision', 'firmware', 'software'] as const;
type Feature = (typeof FEATURES)[number];

const CREATED: CoapResponse = { code: ResponseCode.Created };
/** The first answer to an RPC observation (docs/device-api-coap.md#observing). */
const RPC_OBSERVING: CoapResponse = { code: ResponseCode.Valid };

export interface ThingsBoardRouteDeps {
  readonly registry: DeviceRegistry;
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  /** Per-device rate limits and the unknown-token block on addresses. */
  readonly limits: Pick<RequestLimits, 'admitDevice' | 'refuseBlockedSource' | 'unknownToken'>;
  readonly tokens: TokenCheck;
  /**
   * How long a package GET may wait for its image before it is answered 5.03 with Max-Age: within the
   * piggyback window, because a large answer must not come as a separate response. libcoap before 4.3.5
   * (Debian 12's) and other small clients lose a Block2 transfer whose first block is a separate CON.
   */
  readonly packageAnswerWithinMs: number;
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
 * Positional segments after /api/v1: token, feature, optional request id. A feature name where the token
 * belongs, not followed by another feature name, is the token-less form of DTLS devices identified by
 * their credentials (/api/v1/telemetry, /api/v1/rpc/42, /api/v1/attributes/updates).
 */
export function parseApiPath(segments: readonly string[]): PathTarget {
  const asFeature = (segment: string | undefined): Feature | undefined => {
    if (segment === undefined) return undefined;
    const lower = segment.toLowerCase();
    return FEATURES.find((feature) => feature === lower);
  };
  const tokenLess = asFeature(segments[2]);
  if (tokenLess && (segments.length === 3 || !asFeature(segments[3]))) {
    return { token: undefined, feature: tokenLess, featureSegment: segments[2], requestId: segments[3] };
  }
  return { token: segments[2], feature: asFeature(segments[3]), featureSegment: segments[3], requestId: segments[4] };
}

/** The operation a request asks for, for the request metrics (see OPERATIONS). */
export function operationOf(request: CoapRequest, target: PathTarget): number {
  const get = request.method === Method.GET;
  switch (target.feature) {
    case undefined:
      return Operation.unknown;
    case 'telemetry':
      return Operation.telemetry;
    case 'attributes':
      if (!get) return Operation.attributes;
      return request.observe === undefined ? Operation.attributes_read : Operation.attributes_observe;
    case 'rpc':
      if (get) return Operation.rpc_observe;
      return target.requestId === undefined ? Operation.client_rpc : Operation.rpc_reply;
    case 'claim':
      return Operation.claim;
    case 'provision':
      return Operation.provision;
    default:
      return Operation.firmware;
  }
}

export function createThingsBoardRoute(deps: ThingsBoardRouteDeps): Route {
  const { registry, bridge, provisioner, limits, tokens, log } = deps;

  const route = function thingsBoardRoute(request: CoapRequest, segments: readonly string[]): CoapResponse | Promise<CoapResponse> {
    const target = parseApiPath(segments);
    request.operation = operationOf(request, target);
    if (request.method !== Method.GET && request.method !== Method.POST) {
      return error(ResponseCode.MethodNotAllowed, 'only GET and POST are allowed');
    }
    if (!target.feature) {
      return error(
        ResponseCode.BadRequest,
        target.featureSegment === undefined
          ? `missing feature: expected /api/v1/{token}/{${FEATURES.join('|')}}`
          : `unknown feature "${target.featureSegment}": expected one of ${FEATURES.join(', ')}`,
      );
    }
    if (target.feature === 'provision') return provision(request, target.token);
    // Even an Observe deregistration: a guesser on a blocked address learns nothing.
    if (target.token !== undefined) {
      const blocked = refusedSource(limits, request);
      if (blocked) return blocked;
    }
    const device = authenticate(request, target.token);
    if (typeof device === 'string') return error(ResponseCode.Unauthorized, device);
    request.authenticatedAs = device.name;
    // A registration replayed at start is no new request of the device's: it uses none of its allowance.
    if (!continuesOrEnds(request) && !request.restored) {
      const refused = limits.admitDevice(device.name, request.receivedAt);
      if (refused) return refused;
    }

    switch (target.feature) {
      case 'telemetry':
        if (request.method !== Method.POST) return error(ResponseCode.BadRequest, 'telemetry accepts POST only');
        return forward(request, device, 'telemetry', () => parseTelemetry(request.payload, request.receivedAt), bridge.telemetry);
      case 'attributes':
        if (request.method === Method.GET) return getAttributes(request, device);
        return forward(request, device, 'attributes', () => parseAttributes(request.payload), bridge.clientAttributes);
      case 'rpc':
        if (request.method === Method.GET) return getRpc(request, device);
        if (target.requestId !== undefined) return replyToRpc(request, device, target.requestId);
        return clientRpc(request, device);
      case 'claim':
        if (request.method !== Method.POST) return error(ResponseCode.BadRequest, 'claim accepts POST only');
        return forward(request, device, 'claim', () => parseClaim(request.payload), bridge.claim);
      case 'firmware':
      case 'software':
        if (request.method !== Method.GET) return error(ResponseCode.BadRequest, `${target.feature} accepts GET only`);
        return getPackage(request, device, target.feature === 'firmware' ? 'fw' : 'sw');
    }
  };
  return Object.assign(route, { operationOf: (request: CoapRequest, segments: readonly string[]) => operationOf(request, parseApiPath(segments)) });

  /**
   * The device a request speaks for, or why it may not (4.01). A DTLS session's credential names a device;
   * a token in the path must then name the same one. Without a credential the token alone decides.
   */
  function authenticate(request: CoapRequest, token: string | undefined): Device | string {
    const { credential } = request.peer;
    const byCredential = credential && registry.findByCredential(credential);
    if (credential && !byCredential) return 'the DTLS identity of this session no longer belongs to a registered device';
    if (token === undefined) {
      return byCredential ?? 'no access token in the path: use /api/v1/{token}/..., or DTLS with a PSK identity or client certificate';
    }
    // A registration replayed at start was not sent by that address: a token changed since counts nothing.
    const byToken = tokens.device(token, request.peer.address, request.receivedAt, !credential && !request.restored);
    if (!byToken) return 'unknown access token';
    if (byCredential && byCredential.name !== byToken.name) {
      if (tokens.firstTime(`mismatch ${request.peer.address}`)) {
        log.warn(
          { peer: request.peer.address, device: byCredential.name, tokenDevice: byToken.name },
          'request over DTLS with the token of another device refused (4.01); repeats from this address are not logged for 10 minutes',
        );
      }
      return 'the token in the path belongs to another device than this DTLS identity';
    }
    return byToken;
  }

  /**
   * GET /attributes: with Observe 0 an observation of the shared attributes (first the cached state, then
   * each push's data as is); otherwise a read of the keys asked for, or of what the gateway knows.
   */
  function getAttributes(request: CoapRequest, device: Device): CoapResponse | Promise<CoapResponse> {
    const current = (): CoapResponse => json(ResponseCode.Content, bridge.sharedAttributes(device));
    if (request.observation) {
      startObservation(request.observation, device, current, (notifications) =>
        bridge.observeSharedAttributes(device, notifications.subscriber((update: AttributeUpdate) => json(ResponseCode.Content, updatePayload(update)))),
      );
      return current();
    }
    const keys = parseAttributeKeys(request.uriQuery);
    // Observe 1 (deregistration; the message layer has ended the relation): a plain answer, the current state.
    if (request.observe === 1 && keys.client.length === 0 && keys.shared.length === 0) return current();
    return bridge.readAttributes(device, keys).then((outcome) => {
      switch (outcome.status) {
        case 'found': {
          const body: Record<string, AttributeSet> = {};
          if (outcome.client) body['client'] = outcome.client;
          if (outcome.shared) body['shared'] = outcome.shared;
          return json(ResponseCode.Content, body);
        }
        case 'not-found':
          return error(ResponseCode.NotFound, 'none of the requested attributes exist');
        case 'timeout':
          return error(ResponseCode.GatewayTimeout, 'ThingsBoard did not answer the attribute request in time');
        case 'unavailable':
          return { code: ResponseCode.ServiceUnavailable, payload: outcome.reason, maxAge: outcome.retryAfterSeconds };
      }
    });
  }

  /** GET /rpc: Observe 0 subscribes to server-side RPCs (queued ones follow at once); Observe 1 ends it. */
  function getRpc(request: CoapRequest, device: Device): CoapResponse {
    if (request.observation) {
      startObservation(request.observation, device, () => RPC_OBSERVING, (notifications) =>
        bridge.observeRpc(device, notifications.subscriber((call: RpcCall) => json(ResponseCode.Content, rpcPayload(call)))),
      );
      return RPC_OBSERVING;
    }
    // Observe 1 (deregistration): the message layer has ended the relation; answer plainly.
    if (request.observe === 1) return { code: ResponseCode.Content };
    return error(ResponseCode.BadRequest, 'GET /rpc needs Observe 0 to subscribe to RPCs (coap-client -s); replies are POST /rpc/{id}');
  }

  /** POST /rpc/{id}: the device answers server-side RPC `id`. */
  function replyToRpc(request: CoapRequest, device: Device, requestId: string): CoapResponse | Promise<CoapResponse> {
    const id = parseRpcId(requestId);
    if (!id.ok) return error(ResponseCode.BadRequest, id.error);
    return forward(request, device, 'rpc reply', () => parseRpcReply(request.payload), (d, data) => bridge.rpcReply(d, id.value, data));
  }

  /** POST /rpc: a client-side RPC, answered with what the rule chain replies. */
  function clientRpc(request: CoapRequest, device: Device): CoapResponse | Promise<CoapResponse> {
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parseClientRpc(request.payload);
    if (!parsed.ok) return error(ResponseCode.BadRequest, parsed.error);
    return bridge.clientRpc(device, parsed.value.method, parsed.value.params).then((outcome) => {
      switch (outcome.status) {
        case 'answered':
          return json(ResponseCode.Content, outcome.body);
        case 'timeout':
          return error(ResponseCode.GatewayTimeout, 'no reply to the RPC from ThingsBoard in time');
        case 'too-large':
          return error(ResponseCode.RequestEntityTooLarge, outcome.reason);
        case 'unavailable':
          return unavailable(outcome);
      }
    });
  }

  /**
   * POST /api/v1/provision: no token (the device has none yet). Refused guesses count against the address
   * like unknown tokens, so a key cannot be brute-forced faster than a token.
   */
  function provision(request: CoapRequest, token: string | undefined): CoapResponse | Promise<CoapResponse> {
    if (request.method !== Method.POST) return error(ResponseCode.BadRequest, 'provision accepts POST only');
    if (token !== undefined) return error(ResponseCode.BadRequest, 'provisioning is POST /api/v1/provision, without a token in the path');
    const blocked = refusedSource(limits, request);
    if (blocked) return blocked;
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parseProvisionRequest(request.payload);
    if (!parsed.ok) return provisionAnswer(ResponseCode.BadRequest, provisionFailure('FAILURE', parsed.error));
    return provisioner.provision(parsed.value, request.peer.address).then((outcome) => {
      switch (outcome.status) {
        case 'answered':
          if (outcome.answer.status === 'SUCCESS') return provisionAnswer(ResponseCode.Created, outcome.answer);
          if (outcome.answer.status === 'NOT_FOUND' && !request.peer.credential) {
            limits.unknownToken(request.peer.address, parsed.value.provisionDeviceKey, request.receivedAt);
          }
          return provisionAnswer(ResponseCode.BadRequest, outcome.answer);
        case 'disabled':
          return provisionAnswer(ResponseCode.Forbidden, outcome.answer);
        default:
          return provisioningTrouble(outcome);
      }
    });
  }

  /**
   * GET /fw/{token}?title=&version= (and /sw, /api/v1/{token}/firmware|software): the package image,
   * block by block from the image the gateway holds once for all devices; `size` and `chunk` select one
   * slice of it, as ThingsBoard's transport does.
   */
  function getPackage(request: CoapRequest, device: Device, kind: PackageKind): CoapResponse | Promise<CoapResponse> {
    const query = parseFirmwareQuery(request.uriQuery);
    if (!query.ok) return error(ResponseCode.BadRequest, query.error);
    const { title, version, size, chunk } = query.value;
    return bridge.otaPackage(device, kind, title, version, deps.packageAnswerWithinMs).then((outcome): CoapResponse => {
      switch (outcome.status) {
        case 'ready': {
          const { data, etag } = imageSlice(outcome.image, size, chunk);
          return {
            code: ResponseCode.Content,
            contentFormat: ContentFormat.OctetStream,
            payload: data,
            options: [{ number: OptionNumber.ETag, value: etag }],
            reproducible: true,
          };
        }
        case 'not-assigned':
          return error(ResponseCode.NotFound, packageDiagnostic(outcome, kind, title, version));
        case 'mismatch':
          return error(ResponseCode.BadRequest, packageDiagnostic(outcome, kind, title, version));
        case 'unavailable':
          return unavailable(outcome);
        case 'refused':
          return error(ResponseCode.BadGateway, packageDiagnostic(outcome, kind, title, version));
      }
    });
  }

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
    if (outcome.status === 'accepted') log.debug({ device, feature }, 'accepted (2.01)');
    else log.debug({ device, feature, reason: outcome.reason }, outcome.status === 'unavailable' ? 'upstream unavailable (5.03)' : 'too large for upstream (4.13)');
    return uplinkAnswer(outcome, CREATED);
  }
}

/** A push's `data` as ThingsBoard sent it: changed keys, or `{"deleted":[..]}`. */
function updatePayload(update: AttributeUpdate): JsonValue {
  return update.deleted.length > 0 ? { ...update.changed, deleted: [...update.deleted] } : update.changed;
}

function rpcPayload(call: RpcCall): JsonValue {
  return { id: call.id, method: call.method, params: call.params };
}

/** A provisioning answer in ThingsBoard's JSON, whatever the outcome. */
function provisionAnswer(code: CodeByte, answer: ProvisionAnswer): CoapResponse {
  return json(code, answer.body as JsonValue);
}
