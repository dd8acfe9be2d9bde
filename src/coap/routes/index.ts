// The device-facing path table: the first path segment picks a dialect. Each dialect turns requests into
// bridge calls; a new device API is a new entry here, not a change to the message layer or the bridge.
import { ResponseCode } from '../codes.js';
import type { CoapRequest, CoapResponse, RequestHandler } from '../request.js';

export type Route = (request: CoapRequest, segments: readonly string[]) => CoapResponse | Promise<CoapResponse>;

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

export function createRouter(routes: { readonly api: Route }): RequestHandler {
  return (request) => {
    const segments = pathSegments(request.uriPath);
    if (segments[0] === 'api' && segments[1] === 'v1') return routes.api(request, segments);
    return {
      code: ResponseCode.NotFound,
      payload: `no such path /${segments.join('/')}; the device API lives under /api/v1/{token}/`,
    };
  };
}
