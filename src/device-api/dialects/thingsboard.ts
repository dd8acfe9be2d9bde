// ThingsBoard's device API, /api/v1/{token}/{feature}[/{id}], as its CoAP transport and its HTTP transport
// serve it (docs/device-api-coap.md, docs/device-api-http.md). The operations are the same; the transports differ in their paths (CoAP: a token-less form for
// DTLS devices, /fw and /sw aliases, any-case features; HTTP: exact paths, long-polls) and in how they word
// a wrong method. The answers and their order follow ThingsBoard's own transports, so firmware written for
// them keeps working; refusals add a short diagnostic ThingsBoard does not send.
import type { Logger } from 'pino';
import type { Bridge, PackageKind } from '../../bridge/index.js';
import type { Provisioner } from '../../bridge/provision.js';
import type { Device } from '../../model.js';
import { parseAttributes, parseClaim, parseTelemetry } from '../../payload/thingsboard-json.js';
import type { Dialect, Gate, Handled } from '../dialect.js';
import type { Identify } from '../identify.js';
import type { RequestLimits } from '../limits.js';
import { Operation } from '../operations.js';
import { refuse, type Answer } from '../outcome.js';
import { provision } from '../provision.js';
import { readAttributes, readPackage, rpcPayload, updatePayload, updateStream } from '../reads.js';
import type { DeviceRequest, Method } from '../request.js';
import type { Uplinks } from '../uplinks.js';

const FEATURES = ['telemetry', 'attributes', 'rpc', 'claim', 'provision', 'firmware', 'software'] as const;
type Feature = (typeof FEATURES)[number];
/** The HTTP transport has no provisioning under a token. */
const HTTP_FEATURES = FEATURES.filter((feature) => feature !== 'provision');

export interface ThingsBoardDeps {
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  readonly limits: Pick<RequestLimits, 'unknownToken'>;
  readonly gate: Gate;
  readonly identify: Identify;
  readonly uplinks: Uplinks;
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

/**
 * ThingsBoard's short package paths on CoAP, /fw/{token} and /sw/{token} (token-less over DTLS), are its
 * /api/v1/{token}/firmware and /api/v1/{token}/software.
 */
export function packageAlias(segments: readonly string[]): readonly string[] {
  const feature = segments[0] === 'fw' ? 'firmware' : segments[0] === 'sw' ? 'software' : undefined;
  if (feature === undefined || segments.length > 2) return segments;
  return segments.length === 2 ? ['api', 'v1', segments[1]!, feature] : ['api', 'v1', feature];
}

/** The operation a request asks for, for the request metrics. */
export function operationOf(request: Pick<DeviceRequest, 'method' | 'updates'>, target: Pick<PathTarget, 'feature' | 'requestId'>): number {
  const get = request.method === 'GET';
  switch (target.feature) {
    case undefined:
      return Operation.unknown;
    case 'telemetry':
      return Operation.telemetry;
    case 'attributes':
      if (!get) return Operation.attributes;
      return request.updates === undefined && target.requestId !== 'updates' ? Operation.attributes_read : Operation.attributes_observe;
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

const isApiV1 = (segments: readonly string[]): boolean => segments[0] === 'api' && segments[1] === 'v1';

/**
 * Over CoAP. `packageAnswerWithinMs`: how long a package GET may wait for its image before 5.03 with
 * Max-Age, within the piggyback window (libcoap before 4.3.5 loses a Block2 transfer whose first block
 * comes as a separate CON).
 */
export function thingsBoardCoap(deps: ThingsBoardDeps, packageAnswerWithinMs: number): Dialect {
  const { gate, identify } = deps;
  const run = features(deps, packageAnswerWithinMs, (feature) => `${feature} accepts ${feature === 'firmware' || feature === 'software' ? 'GET' : 'POST'} only`);
  return {
    hint: 'the device API lives under /api/v1/{token}/ (packages under /fw/{token} and /sw/{token})',
    claim(segments) {
      const own = packageAlias(segments);
      return isApiV1(own) ? own : undefined;
    },
    operationOf: (request, segments) => operationOf(request, parseApiPath(segments)),
    handle(request, segments): Handled {
      const target = parseApiPath(segments);
      const operation = operationOf(request, target);
      const done = (outcome: Answer, device?: Device): Handled => ({ operation, device, outcome });
      if (request.method !== 'GET' && request.method !== 'POST') return done(refuse('method-not-allowed', 'only GET and POST are allowed', { allowed: ['GET', 'POST'] }));
      if (!target.feature) {
        return done(
          refuse(
            'bad-request',
            target.featureSegment === undefined
              ? `missing feature: expected /api/v1/{token}/{${FEATURES.join('|')}}`
              : `unknown feature "${target.featureSegment}": expected one of ${FEATURES.join(', ')}`,
          ),
        );
      }
      if (target.feature === 'provision') {
        if (request.method !== 'POST') return done(refuse('bad-request', 'provision accepts POST only'));
        if (target.token !== undefined) return done(refuse('bad-request', 'provisioning is POST /api/v1/provision, without a token in the path'));
        return done(gate.blocked(request) ?? provision(deps.provisioner, deps.limits, request));
      }
      // Even an Observe deregistration: a guesser on a blocked address learns nothing.
      const blocked = target.token !== undefined ? gate.blocked(request) : undefined;
      if (blocked) return done(blocked);
      const device = identify(request, target.token);
      if (typeof device === 'string') return done(refuse('unauthorized', device));
      return done(gate.admitDevice(request, device) ?? run(request, device, target.feature, target.requestId, request.updates), device);
    },
  };
}

/** Over HTTP: exact paths, a wrong method is 405 with Allow, GET /rpc and /attributes/updates are long-polls. */
export function thingsBoardHttp(deps: ThingsBoardDeps, packageWaitMs: number): Dialect {
  const { gate, identify } = deps;
  const run = features(deps, packageWaitMs, () => 'method not allowed here');
  return {
    hint: `the device API is /api/v1/{token}/{${HTTP_FEATURES.join('|')}}`,
    claim: (segments) => (isApiV1(segments) && segments.length >= 3 ? segments : undefined),
    operationOf: (request, segments) => operationOf(request, { feature: httpFeature(segments[3]), requestId: segments[4] }),
    handle(request, segments): Handled {
      const [token, featureSegment, id, extra] = [segments[2]!, segments[3], segments[4], segments[5]];
      const feature = httpFeature(featureSegment);
      const operation = segments[2] === 'provision' && segments.length === 3 ? Operation.provision : operationOf(request, { feature, requestId: id });
      const done = (outcome: Answer, device?: Device): Handled => ({ operation, device, outcome });
      if (segments[2] === 'provision' && segments.length === 3) {
        if (request.method !== 'POST') return done(notAllowed(['POST']));
        return done(gate.blocked(request) ?? provision(deps.provisioner, deps.limits, request));
      }
      const methods = httpMethods(feature, id);
      if (!methods || extra !== undefined) {
        return done(
          refuse(
            'not-found',
            featureSegment === undefined ? `missing feature: expected /api/v1/{token}/{${HTTP_FEATURES.join('|')}}` : `no such path /api/v1/{token}/${segments.slice(3).join('/')}`,
          ),
        );
      }
      if (!methods.includes(request.method)) return done(notAllowed(methods));
      const blocked = gate.blocked(request);
      if (blocked) return done(blocked);
      const device = identify(request, token);
      if (typeof device === 'string') return done(refuse('unauthorized', device));
      // A long-poll is the HTTP transport's stream of updates.
      const updates = request.method === 'GET' && (feature === 'rpc' || id === 'updates') ? 'open' : undefined;
      return done(gate.admitDevice(request, device) ?? run(request, device, feature!, id, updates), device);
    },
  };
}

/** The operations behind the features, the same over every transport. `wrongMethod` words a refused method. */
function features(deps: ThingsBoardDeps, packageWaitMs: number, wrongMethod: (feature: Feature) => string) {
  const { bridge, uplinks } = deps;
  const onlyPost = (feature: Feature): Answer => refuse('bad-request', wrongMethod(feature));
  return function run(request: DeviceRequest, device: Device, feature: Feature, requestId: string | undefined, updates: DeviceRequest['updates']): Answer {
    const get = request.method === 'GET';
    switch (feature) {
      case 'telemetry':
        if (get) return onlyPost(feature);
        return uplinks.forward(request, device, 'telemetry', () => parseTelemetry(request.body, request.receivedAt), bridge.telemetry);
      case 'attributes':
        if (!get) return uplinks.forward(request, device, 'attributes', () => parseAttributes(request.body), bridge.clientAttributes);
        // With Observe 0 (or a long-poll): first the cached state, then each push's data as ThingsBoard sent it.
        if (updates === 'open') return updateStream(bridge, device, () => bridge.sharedAttributes(device), { attributes: updatePayload });
        return readAttributes(bridge, request, device);
      case 'rpc':
        if (!get) return requestId !== undefined ? uplinks.replyToRpc(request, device, requestId) : uplinks.clientRpc(request, device);
        // Observe 0 subscribes to server-side RPCs (queued ones follow at once); nothing to show before the first.
        if (updates === 'open') return updateStream(bridge, device, () => undefined, { rpc: rpcPayload });
        // Observe 1: the relation has ended; answer plainly.
        if (updates === 'close') return { kind: 'empty' };
        return refuse('bad-request', 'GET /rpc needs Observe 0 to subscribe to RPCs (coap-client -s); replies are POST /rpc/{id}');
      case 'claim':
        if (get) return onlyPost(feature);
        return uplinks.forward(request, device, 'claim', () => parseClaim(request.body), bridge.claim);
      case 'firmware':
      case 'software':
        if (!get) return onlyPost(feature);
        return readPackage(bridge, request, device, packageKind(feature), packageWaitMs);
      case 'provision':
        return refuse('bad-request', 'provisioning is POST /api/v1/provision, without a token in the path');
    }
  };
}

const packageKind = (feature: 'firmware' | 'software'): PackageKind => (feature === 'firmware' ? 'fw' : 'sw');

function httpFeature(segment: string | undefined): Feature | undefined {
  return HTTP_FEATURES.find((feature) => feature === segment);
}

/** The methods an HTTP path takes, or undefined when there is no such path. */
function httpMethods(feature: Feature | undefined, id: string | undefined): Method[] | undefined {
  switch (feature) {
    case 'telemetry':
    case 'claim':
      return id === undefined ? ['POST'] : undefined;
    case 'attributes':
      if (id === 'updates') return ['GET'];
      return id === undefined ? ['GET', 'POST'] : undefined;
    case 'rpc':
      return id === undefined ? ['GET', 'POST'] : ['POST'];
    case 'firmware':
    case 'software':
      return id === undefined ? ['GET'] : undefined;
    default:
      return undefined;
  }
}

function notAllowed(methods: readonly Method[]) {
  return refuse('method-not-allowed', `method not allowed here: use ${methods.join(' or ')}`, { allowed: methods });
}
