// The HTTP front end's half that knows the device API: an HTTP request, read into the device API's words;
// the outcome, rendered as ThingsBoard's HTTP transport answers: 200 with an empty body for accepted
// uplinks, 401 for an unknown token, 429/503 with Retry-After, and a stream of updates as a long-poll that
// ends with 408 and an empty body when nothing comes in time. Error answers carry a one-line diagnostic.
import type { Subscription } from '../../bridge/index.js';
import type { DeviceApi } from '../../device-api/index.js';
import type { Outcome, Problem, Refusal } from '../../device-api/outcome.js';
import type { DeviceRequest } from '../../device-api/request.js';
import { encodeJson } from '../../json-safety.js';
import type { JsonValue } from '../../model.js';

export interface HttpDeviceRequest {
  readonly method: string;
  /** Its path segments, percent-decoded. */
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

/** A long-poll without ?timeout= waits this long; longer ones are cut to the maximum. */
export const DEFAULT_POLL_TIMEOUT_MS = 60_000;
export const MAX_POLL_TIMEOUT_MS = 300_000;

/** A status with a one-line text diagnostic. */
export const text = (status: number, diagnostic: string, headers?: Record<string, string>): HttpAnswer => ({
  status,
  body: `${diagnostic}\n`,
  contentType: 'text/plain; charset=utf-8',
  ...(headers ? { headers } : {}),
});

export interface DeviceHttpApi {
  handle(request: HttpDeviceRequest): Promise<HttpAnswer>;
  /** Long-polls waiting now. */
  waiting(): number;
  /** Ends the long-polls waiting (503): the gateway is stopping. */
  stop(): void;
}

export function createDeviceHttpApi(api: DeviceApi): DeviceHttpApi {
  /** How to end each long-poll waiting now. */
  const polls = new Set<(answer: HttpAnswer) => void>();

  return {
    async handle(request) {
      const { outcome } = api.handle(deviceRequest(request));
      const settled = await outcome;
      return settled.kind === 'updates' ? poll(request, settled) : render(settled);
    },
    waiting: () => polls.size,
    stop() {
      for (const end of [...polls]) end(text(503, 'the gateway is stopping', { 'Retry-After': '5' }));
    },
  };

  /**
   * Waits for one item of the stream (an RPC, a shared-attribute push): 408 with an empty body when none
   * comes in time. An RPC whose answer does not reach the client stays queued for the next poll. A newer
   * poll of the same device and kind ends this one with 408.
   */
  function poll(request: HttpDeviceRequest, stream: Extract<Outcome, { kind: 'updates' }>): Promise<HttpAnswer> {
    const timeout = pollTimeout(request.query);
    if (typeof timeout === 'string') return Promise.resolve(text(400, timeout));
    return new Promise<HttpAnswer>((resolve) => {
      let finished = false;
      let subscriptions: Subscription[] = [];
      const finish = (answer: HttpAnswer): void => {
        if (finished) return;
        finished = true;
        polls.delete(finish);
        clearTimeout(timer);
        subscriptions.forEach((subscription) => subscription.end());
        resolve(answer);
      };
      polls.add(finish);
      const timer = setTimeout(() => finish({ status: 408 }), timeout);
      request.onClose(() => finish({ status: 408 }));
      subscriptions = stream.open({
        deliver(body) {
          // One item per poll: later ones (queued RPCs delivered together) go back to the queue.
          if (finished) return Promise.resolve('failed');
          return new Promise((delivered) => finish({ ...json(body), delivered: (sent) => delivered(sent ? 'sent' : 'failed') }));
        },
        replaced: () => finish({ status: 408 }),
        revoked: () => finish(text(401, 'this device was removed or its credentials changed')),
      });
      // A queued RPC may have been delivered while subscribing.
      if (finished) subscriptions.forEach((subscription) => subscription.end());
    });
  }
}

/** An HTTP request in the device API's words. */
function deviceRequest(request: HttpDeviceRequest): DeviceRequest {
  const type = request.contentType?.split(';', 1)[0]?.trim().toLowerCase();
  const acceptable = type === undefined || type === '' || type === 'application/json' || type === 'text/plain' || type === 'application/x-www-form-urlencoded';
  return {
    method: request.method,
    segments: request.segments,
    query: request.query,
    body: request.body,
    unsupportedFormat: acceptable ? undefined : `Content-Type ${type} is not supported; send JSON (application/json)`,
    peer: { address: request.peer },
    receivedAt: request.receivedAt,
    // The dialect knows which paths are long-polls.
    updates: undefined,
    continuation: false,
    restored: false,
  };
}

const STATUSES: Readonly<Record<Problem, number>> = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  'method-not-allowed': 405,
  'too-large': 413,
  'unsupported-format': 415,
  'too-many-requests': 429,
  unavailable: 503,
  timeout: 504,
  'bad-gateway': 502,
  internal: 500,
};

const OK: HttpAnswer = { status: 200 };

function render(outcome: Exclude<Outcome, { kind: 'updates' }>): HttpAnswer {
  switch (outcome.kind) {
    case 'accepted':
      return outcome.body === undefined ? OK : json(outcome.body);
    case 'content':
      return json(outcome.body);
    case 'empty':
      return OK;
    case 'package':
      return { status: 200, body: outcome.data, contentType: 'application/octet-stream', headers: { ETag: `"${outcome.etag.toString('hex')}"` } };
    case 'provisioned':
      // ThingsBoard's HTTP transport answers 200 with the status in the JSON.
      return json(outcome.body, outcome.result === 'disabled' ? 403 : outcome.result === 'invalid' ? 400 : 200);
    case 'refused':
      return refusal(outcome.refusal);
  }
}

function refusal(refused: Refusal): HttpAnswer {
  const headers: Record<string, string> = {};
  if (refused.retryAfterSeconds !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(refused.retryAfterSeconds)));
  if (refused.allowed) headers['Allow'] = refused.allowed.join(', ');
  const status = STATUSES[refused.problem];
  const extra = Object.keys(headers).length > 0 ? headers : undefined;
  // A dialect's own JSON error body goes out as JSON, with the same status and headers.
  if (refused.body !== undefined) return { ...json(refused.body, status), ...(extra ? { headers: extra } : {}) };
  return text(status, refused.reason, extra);
}

/** Values from upstream are bounded where they arrive; one still beyond encoding is a 500, not a dead process. */
function json(value: JsonValue, status = 200): HttpAnswer {
  const body = encodeJson(value);
  return body === undefined ? text(500, 'the gateway could not encode this answer as JSON') : { status, body, contentType: 'application/json' };
}

function pollTimeout(query: readonly string[]): number | string {
  const item = query.find((entry) => entry.startsWith('timeout='));
  if (item === undefined) return DEFAULT_POLL_TIMEOUT_MS;
  const value = item.slice('timeout='.length);
  if (!/^\d{1,9}$/.test(value)) return `timeout must be a whole number of milliseconds (got "${value}")`;
  return Math.min(Number(value), MAX_POLL_TIMEOUT_MS);
}
