// ThingsBoard's HTTP device API (docs/device-api-http.md): /api/v1/{token}/{feature} → the same bridge calls the
// CoAP route makes. Answers use the status codes devices written for ThingsBoard's HTTP transport know:
// 200 with an empty body for accepted uplinks, 401 for an unknown token, 408 with an empty body when a
// long-poll ends without an update. Error answers carry a one-line text diagnostic.
import type { Logger } from 'pino';
import { packageDiagnostic, type Bridge, type Subscription } from '../bridge/index.js';
import type { Provisioner } from '../bridge/provision.js';
import type { RequestLimits } from '../coap/limits.js';
import type { TokenCheck } from '../devices/token-check.js';
import { imageSlice } from '../firmware/image-store.js';
import { encodeJson } from '../json-safety.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall, Subscriber, UplinkOutcome } from '../model.js';
import { parseFirmwareQuery, parseProvisionRequest, provisionFailure } from '../payload/provision.js';
import { parseAttributeKeys, parseAttributes, parseClaim, parseClientRpc, parseRpcId, parseRpcReply, parseTelemetry, type Parsed } from '../payload/thingsboard-json.js';

export interface HttpDeviceRequest {
  readonly method: string;
  /** The path, without the query, as sent (for diagnostics). */
  readonly path: string;
  /** Its segments, percent-decoded. */
  readonly segments: readonly string[];
  /** Query items as "name=value", percent-decoded. */
  readonly query: readonly string[];
  readonly contentType: string | undefined;
  readonly body: Buffer;
  readonly peer: string;
  readonly receivedAt: number;
  /** Called once if the client goes away before its answer is sent (a long-poll given up). */
  onClose(listener: () => void): void;
}

export interface HttpAnswer {
  readonly status: number;
  readonly body?: Buffer | string;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Told whether the answer reached the client's socket (a long-poll's RPC is queued again if not). */
  readonly delivered?: (sent: boolean) => void;
}

export interface DeviceHttpApiDeps {
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  readonly limits: Pick<RequestLimits, 'admitRequest' | 'admitDevice' | 'refuseBlockedSource' | 'unknownToken'>;
  readonly tokens: TokenCheck;
  readonly log: Logger;
}

const FEATURES = ['telemetry', 'attributes', 'rpc', 'claim', 'firmware', 'software'] as const;
/** A long-poll without ?timeout= waits this long; longer ones are cut to the maximum. */
export const DEFAULT_POLL_TIMEOUT_MS = 60_000;
export const MAX_POLL_TIMEOUT_MS = 300_000;
/** An HTTP client can wait for a package image being downloaded longer than a CoAP device (no piggyback window). */
const PACKAGE_WAIT_MS = 20_000;

const OK: HttpAnswer = { status: 200 };
/** A status with a one-line text diagnostic. */
export const text = (status: number, diagnostic: string, headers?: Record<string, string>): HttpAnswer => ({
  status,
  body: `${diagnostic}\n`,
  contentType: 'text/plain; charset=utf-8',
  ...(headers ? { headers } : {}),
});
/** Values from upstream are bounded where they arrive; one still beyond encoding is a 500, not a dead process. */
const json = (value: JsonValue, status = 200): HttpAnswer => {
  const body = encodeJson(value);
  return body === undefined ? text(500, 'the gateway could not encode this answer as JSON') : { status, body, contentType: 'application/json' };
};
const retryLater = (outcome: { readonly reason: string; readonly retryAfterSeconds: number }, status = 503): HttpAnswer =>
  text(status, outcome.reason, { 'Retry-After': String(Math.max(1, Math.ceil(outcome.retryAfterSeconds))) });

export interface DeviceHttpApi {
  handle(request: HttpDeviceRequest): Promise<HttpAnswer>;
  /** Long-polls waiting now. */
  waiting(): number;
  /** Ends the long-polls waiting (503): the gateway is stopping. */
  stop(): void;
}

export function createDeviceHttpApi(deps: DeviceHttpApiDeps): DeviceHttpApi {
  const { bridge, provisioner, limits, tokens, log } = deps;
  /** How to end each long-poll waiting now. */
  const polls = new Set<(answer: HttpAnswer) => void>();

  return {
    handle,
    waiting: () => polls.size,
    stop() {
      for (const end of [...polls]) end(text(503, 'the gateway is stopping', { 'Retry-After': '5' }));
    },
  };

  async function handle(request: HttpDeviceRequest): Promise<HttpAnswer> {
    const segments = request.segments;
    if (segments[0] !== 'api' || segments[1] !== 'v1' || segments.length < 3) {
      return text(404, `no such path ${request.path}; the device API is /api/v1/{token}/{${FEATURES.join('|')}}`);
    }
    const busy = limits.admitRequest(request.receivedAt);
    if (busy) return tooMany(busy);
    if (segments[2] === 'provision' && segments.length === 3) {
      if (request.method !== 'POST') return notAllowed(['POST']);
      return provision(request);
    }
    const [token, feature, id, extra] = [segments[2]!, segments[3], segments[4], segments[5]];
    const method = methodsOf(feature, id);
    if (!method || extra !== undefined) {
      return text(404, feature === undefined ? `missing feature: expected /api/v1/{token}/{${FEATURES.join('|')}}` : `no such path /api/v1/{token}/${segments.slice(3).join('/')}`);
    }
    if (!method.includes(request.method)) return notAllowed(method);

    const blocked = limits.refuseBlockedSource(request.peer, request.receivedAt);
    if (blocked) return tooMany(blocked);
    const device = tokens.device(token, request.peer, request.receivedAt);
    if (!device) return text(401, 'unknown access token');
    const refused = limits.admitDevice(device.name, request.receivedAt);
    if (refused) return tooMany(refused);

    switch (feature) {
      case 'telemetry':
        return forward(request, device, 'telemetry', () => parseTelemetry(request.body, request.receivedAt), bridge.telemetry);
      case 'attributes':
        if (id === 'updates') return poll(request, device, 'attributes');
        if (request.method === 'GET') return readAttributes(request, device);
        return forward(request, device, 'attributes', () => parseAttributes(request.body), bridge.clientAttributes);
      case 'rpc':
        if (request.method === 'GET') return poll(request, device, 'rpc');
        if (id !== undefined) return replyToRpc(request, device, id);
        return clientRpc(request, device);
      case 'claim':
        return forward(request, device, 'claim', () => parseClaim(request.body), bridge.claim);
      default:
        return getPackage(request, device, feature === 'firmware' ? 'fw' : 'sw');
    }
  }

  async function forward<T>(
    request: HttpDeviceRequest,
    device: Device,
    feature: string,
    parse: () => Parsed<T>,
    send: (device: Device, value: T) => Promise<UplinkOutcome>,
  ): Promise<HttpAnswer> {
    const unsupported = checkContentType(request);
    if (unsupported) return unsupported;
    const parsed = parse();
    if (!parsed.ok) {
      log.debug({ device: device.name, feature, reason: parsed.error }, 'payload refused (400)');
      return text(400, parsed.error);
    }
    return uplinkAnswer(await send(device, parsed.value));
  }

  /** GET /attributes?clientKeys=&sharedKeys=: as ThingsBoard answers it, {"client": {..}, "shared": {..}}. */
  async function readAttributes(request: HttpDeviceRequest, device: Device): Promise<HttpAnswer> {
    const outcome = await bridge.readAttributes(device, parseAttributeKeys(request.query));
    switch (outcome.status) {
      case 'found': {
        const body: Record<string, AttributeSet> = {};
        if (outcome.client) body['client'] = outcome.client;
        if (outcome.shared) body['shared'] = outcome.shared;
        return json(body);
      }
      case 'not-found':
        return text(404, 'none of the requested attributes exist');
      case 'timeout':
        return text(504, 'ThingsBoard did not answer the attribute request in time');
      case 'unavailable':
        return retryLater(outcome);
    }
  }

  async function replyToRpc(request: HttpDeviceRequest, device: Device, requestId: string): Promise<HttpAnswer> {
    const id = parseRpcId(requestId);
    if (!id.ok) return text(400, id.error);
    return forward(request, device, 'rpc reply', () => parseRpcReply(request.body), (d, data) => bridge.rpcReply(d, id.value, data));
  }

  async function clientRpc(request: HttpDeviceRequest, device: Device): Promise<HttpAnswer> {
    const unsupported = checkContentType(request);
    if (unsupported) return unsupported;
    const parsed = parseClientRpc(request.body);
    if (!parsed.ok) return text(400, parsed.error);
    const outcome = await bridge.clientRpc(device, parsed.value.method, parsed.value.params);
    switch (outcome.status) {
      case 'answered':
        return json(outcome.body);
      case 'timeout':
        return text(504, 'no reply to the RPC from ThingsBoard in time');
      case 'too-large':
        return text(413, outcome.reason);
      case 'unavailable':
        return retryLater(outcome);
    }
  }

  /** POST /api/v1/provision: ThingsBoard's HTTP transport answers 200 with the status in the JSON. */
  async function provision(request: HttpDeviceRequest): Promise<HttpAnswer> {
    const blocked = limits.refuseBlockedSource(request.peer, request.receivedAt);
    if (blocked) return tooMany(blocked);
    const unsupported = checkContentType(request);
    if (unsupported) return unsupported;
    const parsed = parseProvisionRequest(request.body);
    if (!parsed.ok) return json(provisionFailure('FAILURE', parsed.error).body as JsonValue, 400);
    const outcome = await provisioner.provision(parsed.value, request.peer);
    switch (outcome.status) {
      case 'answered':
        if (outcome.answer.status === 'NOT_FOUND') limits.unknownToken(request.peer, parsed.value.provisionDeviceKey, request.receivedAt);
        return json(outcome.answer.body as JsonValue);
      case 'disabled':
        return json(outcome.answer.body as JsonValue, 403);
      case 'timeout':
        return text(504, 'ThingsBoard did not answer the provisioning request in time');
      case 'unavailable':
        return retryLater(outcome);
      case 'bad-answer':
        return text(502, outcome.reason);
    }
  }

  async function getPackage(request: HttpDeviceRequest, device: Device, kind: 'fw' | 'sw'): Promise<HttpAnswer> {
    const query = parseFirmwareQuery(request.query);
    if (!query.ok) return text(400, query.error);
    const { title, version, size, chunk } = query.value;
    const outcome = await bridge.otaPackage(device, kind, title, version, PACKAGE_WAIT_MS);
    switch (outcome.status) {
      case 'ready': {
        const { data, etag } = imageSlice(outcome.image, size, chunk);
        return { status: 200, body: data, contentType: 'application/octet-stream', headers: { ETag: `"${etag.toString('hex')}"` } };
      }
      case 'not-assigned':
        return text(404, packageDiagnostic(outcome, kind, title, version));
      case 'mismatch':
        return text(400, packageDiagnostic(outcome, kind, title, version));
      case 'unavailable':
        return retryLater(outcome);
      case 'refused':
        return text(502, packageDiagnostic(outcome, kind, title, version));
    }
  }

  /**
   * GET /rpc?timeout= and /attributes/updates?timeout=: waits for one RPC or one shared-attribute push,
   * 408 with an empty body when none comes in time. An RPC whose answer does not reach the client stays
   * queued for the next poll. A newer poll of the same device and kind ends this one with 408.
   */
  function poll(request: HttpDeviceRequest, device: Device, kind: 'rpc' | 'attributes'): Promise<HttpAnswer> {
    const timeout = pollTimeout(request.query);
    if (typeof timeout === 'string') return Promise.resolve(text(400, timeout));
    return new Promise<HttpAnswer>((resolve) => {
      let finished = false;
      let subscription: Subscription | undefined;
      const finish = (answer: HttpAnswer): void => {
        if (finished) return;
        finished = true;
        polls.delete(finish);
        clearTimeout(timer);
        subscription?.end();
        resolve(answer);
      };
      polls.add(finish);
      const timer = setTimeout(() => finish({ status: 408 }), timeout);
      request.onClose(() => finish({ status: 408 }));
      function subscriber<T>(body: (item: T) => JsonValue): Subscriber<T> {
        return {
          deliver(item) {
            // One item per poll: later ones (queued RPCs delivered together) go back to the queue.
            if (finished) return Promise.resolve('failed');
            return new Promise((delivered) => finish({ ...json(body(item)), delivered: (sent) => delivered(sent ? 'sent' : 'failed') }));
          },
          replaced: () => finish({ status: 408 }),
          revoked: () => finish(text(401, 'this device was removed or its credentials changed')),
        };
      }
      subscription =
        kind === 'rpc'
          ? bridge.observeRpc(device, subscriber<RpcCall>((call) => ({ id: call.id, method: call.method, params: call.params })))
          : bridge.observeSharedAttributes(device, subscriber<AttributeUpdate>(updateBody));
      // A queued RPC may have been delivered while subscribing.
      if (finished) subscription.end();
    });
  }
}

/** The methods a path takes, or undefined when there is no such path. */
function methodsOf(feature: string | undefined, id: string | undefined): string[] | undefined {
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

function pollTimeout(query: readonly string[]): number | string {
  const item = query.find((entry) => entry.startsWith('timeout='));
  if (item === undefined) return DEFAULT_POLL_TIMEOUT_MS;
  const value = item.slice('timeout='.length);
  if (!/^\d{1,9}$/.test(value)) return `timeout must be a whole number of milliseconds (got "${value}")`;
  return Math.min(Number(value), MAX_POLL_TIMEOUT_MS);
}

/** A push's `data` as ThingsBoard sends it on this API: changed keys, or {"deleted": [..]}. */
function updateBody(update: AttributeUpdate): JsonValue {
  return update.deleted.length > 0 ? { ...update.changed, deleted: [...update.deleted] } : update.changed;
}

function uplinkAnswer(outcome: UplinkOutcome): HttpAnswer {
  switch (outcome.status) {
    case 'accepted':
      return OK;
    case 'unavailable':
      return retryLater(outcome);
    case 'too-large':
      return text(413, outcome.reason);
  }
}

function checkContentType(request: HttpDeviceRequest): HttpAnswer | undefined {
  const type = request.contentType?.split(';', 1)[0]?.trim().toLowerCase();
  if (type === undefined || type === '' || type === 'application/json' || type === 'text/plain' || type === 'application/x-www-form-urlencoded') return undefined;
  return text(415, `Content-Type ${type} is not supported; send JSON (application/json)`);
}

function notAllowed(methods: readonly string[]): HttpAnswer {
  return text(405, `method not allowed here: use ${methods.join(' or ')}`, { Allow: methods.join(', ') });
}

/** The limits' 4.29 refusal as HTTP: 429 with Retry-After. */
function tooMany(refusal: { readonly payload?: Buffer | string; readonly maxAge?: number }): HttpAnswer {
  return text(429, String(refusal.payload ?? 'too many requests'), { 'Retry-After': String(refusal.maxAge ?? 1) });
}
