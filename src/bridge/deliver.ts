import type { Device, UplinkOutcome } from '../model.js';
import { nextPublish, type Publish } from '../upstream/batch.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import type { DevicePresence } from './presence.js';
import type { Uplink, Upstream } from './upstream-port.js';

const ACCEPTED: UplinkOutcome = { status: 'accepted' };

/** One device's uplink waiting for the end of the event-loop turn, then for its publishes' PUBACKs. */
interface Request {
  readonly rows: readonly UplinkItem[];
  readonly answer: (outcome: UplinkOutcome) => void;
  /** Publishes carrying its rows not yet acknowledged. */
  unacknowledged: number;
  answered: boolean;
}

/**
 * The direct path (outbox.enabled false): a device is told "created" only once the broker has acknowledged
 * every publish carrying its items. Uplinks arriving in one turn of the event loop go out together, many
 * devices per publish (as the outbox does), so a publish — and a socket write — serves many requests.
 * While the broker is unreachable devices hear 5.03 and keep their readings.
 */
export function createDirectUplink(upstream: Upstream, presence: DevicePresence): Uplink {
  let waiting: Request[] = [];

  function answer(request: Request, outcome: UplinkOutcome): void {
    if (request.answered) return;
    request.answered = true;
    request.answer(outcome);
  }

  /** The publishes for `requests`, in order; a request with a row too large for any publish is answered and left out. */
  function plan(requests: Request[]): Array<{ publish: Publish; owners: Set<Request> }> {
    for (;;) {
      const rows: UplinkItem[] = [];
      const ownerOf: Request[] = [];
      for (const request of requests) {
        for (const row of request.rows) {
          rows.push(row);
          ownerOf.push(request);
        }
      }
      const maxBytes = upstream.maxMessageBytes;
      const planned: Array<{ publish: Publish; owners: Set<Request> }> = [];
      let tooLarge: Request | undefined;
      for (let start = 0; start < rows.length; ) {
        const publish = nextPublish(rows, start, maxBytes, upstream.maxPointsPerPublish);
        if ('oversized' in publish) {
          // Only when ThingsBoard announced a smaller limit after the items were built: rare, so plan again without it.
          tooLarge = ownerOf[start]!;
          answer(tooLarge, { status: 'too-large', reason: `${publish.bytes} bytes exceed ThingsBoard's limit of ${maxBytes}` });
          break;
        }
        planned.push({ publish, owners: new Set(ownerOf.slice(start, start + publish.rows)) });
        start += publish.rows;
      }
      if (!tooLarge) return planned;
      requests = requests.filter((request) => request !== tooLarge);
    }
  }

  function flush(): void {
    const requests = waiting;
    waiting = [];
    for (const { publish, owners } of plan(requests)) {
      for (const owner of owners) owner.unacknowledged++;
      upstream.publish(publish.topic, publish.payload, { dataPoints: publish.points }).then(
        () => {
          for (const owner of owners) if (--owner.unacknowledged === 0) answer(owner, ACCEPTED);
        },
        (error: unknown) => {
          const outcome: UplinkOutcome =
            error instanceof UpstreamUnavailableError
              ? { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds }
              : { status: 'unavailable', reason: `the upstream publish failed: ${(error as Error).message}`, retryAfterSeconds: upstream.retryAfterSeconds() };
          for (const owner of owners) answer(owner, outcome);
        },
      );
    }
  }

  return {
    send(device: Device, items: readonly UplinkItem[]): Promise<UplinkOutcome> {
      if (!upstream.connected) {
        return Promise.resolve({
          status: 'unavailable',
          reason: 'the gateway is not connected to ThingsBoard',
          retryAfterSeconds: upstream.retryAfterSeconds(),
        });
      }
      presence.ensureAnnounced(device);
      if (items.length === 0) return Promise.resolve(ACCEPTED);
      return new Promise((resolve) => {
        if (waiting.length === 0) setImmediate(flush);
        waiting.push({ rows: items, answer: resolve, unacknowledged: 0, answered: false });
      });
    },
  };
}
