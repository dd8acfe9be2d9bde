// The device-facing path table: the first path segment picks a dialect. Each dialect turns requests into
// bridge calls; a new device API is a new entry here, not a change to the message layer or the bridge.
import { ResponseCode } from '../codes.js';
import type { CoapRequest, CoapResponse, RequestHandler } from '../request.js';

/**
 * What a request asks for, as the request metrics label it: the gateway's operations, whatever the
 * dialect's paths. Never the path itself, which holds the device's access token. `unknown`: under the
 * device API but no known feature, or refused for its options before its path was read; `other`: a path
 * outside every dialect.
 */
export const OPERATIONS = [
  'unknown',
  'other',
  'telemetry',
  'attributes',
  'attributes_read',
  'attributes_observe',
  'rpc_observe',
  'rpc_reply',
  'client_rpc',
  'claim',
  'provision',
  'firmware',
  'values_read',
] as const;
export type OperationName = (typeof OPERATIONS)[number];
export const Operation = Object.fromEntries(OPERATIONS.map((name, index) => [name, index])) as { readonly [K in OperationName]: number };

export type Route = ((request: CoapRequest, segments: readonly string[]) => CoapResponse | Promise<CoapResponse>) & {
  /** The operation of a request the message layer answered before the route saw it (4.29, 4.13, Block1). */
  readonly operationOf?: (request: CoapRequest, segments: readonly string[]) => number;
};

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

/**
 * ThingsBoard's short package paths, /fw/{token} and /sw/{token} (token-less over DTLS), are its
 * /api/v1/{token}/firmware and /api/v1/{token}/software.
 */
export function packageAlias(segments: string[]): string[] {
  const feature = segments[0] === 'fw' ? 'firmware' : segments[0] === 'sw' ? 'software' : undefined;
  if (feature === undefined || segments.length > 2) return segments;
  return segments.length === 2 ? ['api', 'v1', segments[1]!, feature] : ['api', 'v1', feature];
}

/** A path as a diagnostic may name it: enough to recognise, never an echo of a long request. */
function shortPath(segments: readonly string[]): string {
  const path = `/${segments.join('/')}`;
  return path.length <= 64 ? path : `${path.slice(0, 63)}…`;
}

/** The dialects by path prefix: ThingsBoard's /api/v1 always, thethings.io's /v2/things when enabled. */
export interface Routes {
  readonly api: Route;
  readonly thethings?: Route;
}

export function createRouter(routes: Routes): RequestHandler {
  const routeOf = (segments: readonly string[]): Route | undefined => {
    if (segments[0] === 'api' && segments[1] === 'v1') return routes.api;
    if (segments[0] === 'v2' && segments[1] === 'things') return routes.thethings;
    return undefined;
  };
  const handler = (request: CoapRequest): CoapResponse | Promise<CoapResponse> => {
    const segments = packageAlias(pathSegments(request.uriPath));
    const route = routeOf(segments);
    // The route labels what it handles itself, having parsed the path anyway.
    if (route) return route(request, segments);
    request.operation = Operation.other;
    return {
      code: ResponseCode.NotFound,
      payload: `no such path ${shortPath(segments)}; the device API lives under /api/v1/{token}/ (packages under /fw/{token} and /sw/{token})${routes.thethings ? ', thethings.io\'s under /v2/things' : ''}`,
    };
  };
  const classify = (request: CoapRequest): number => {
    const segments = packageAlias(pathSegments(request.uriPath));
    const route = routeOf(segments);
    if (!route) return Operation.other;
    return route.operationOf?.(request, segments) ?? Operation.unknown;
  };
  return Object.assign(handler, { operations: OPERATIONS, classify });
}
