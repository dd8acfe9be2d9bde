import type { Device, UplinkOutcome } from '../model.js';
import { nextPublish, type Publish } from '../upstream/batch.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import type { DevicePresence } from './presence.js';
import type { Uplink, Upstream } from './upstream-port.js';

const ACCEPTED: UplinkOutcome = { status: 'accepted' };

/** One device's uplink waiting for the end of the event-loop turn, then for its publishes' PUBACKs. */
export interface BatchedUplink {
  readonly rows: readonly UplinkItem[];
  /** Publishes carrying its rows not yet acknowledged. */
  unacknowledged: number;
}

/**
 * Packs the uplinks that arrive in one turn of the event loop into as few publishes as fit under the broker's
 * limits, many devices per publish (as the outbox does), so a publish, and a socket write, serves many
 * requests. `send` gets each publish with the requests it carries, once each request knows how many
 * publishes it waits for; a request with a row too large for any publish goes to `tooLarge` and is left out.
 */
export class TurnBatcher<R extends BatchedUplink> {
  private waiting: R[] = [];

  constructor(
    private readonly upstream: Pick<Upstream, 'maxMessageBytes' | 'maxPointsPerPublish'>,
    private readonly send: (publish: Publish, owners: ReadonlySet<R>) => void,
    private readonly tooLarge: (request: R, reason: string) => void,
  ) {}

  add(request: R): void {
    if (this.waiting.length === 0) setImmediate(() => this.flush());
    this.waiting.push(request);
  }

  private flush(): void {
    const requests = this.waiting;
    this.waiting = [];
    const planned = this.plan(requests);
    for (const { owners } of planned) for (const owner of owners) owner.unacknowledged++;
    for (const { publish, owners } of planned) this.send(publish, owners);
  }

  /** The publishes for `requests`, in order. */
  private plan(requests: R[]): Array<{ publish: Publish; owners: Set<R> }> {
    for (;;) {
      const rows: UplinkItem[] = [];
      const ownerOf: R[] = [];
      for (const request of requests) {
        for (const row of request.rows) {
          rows.push(row);
          ownerOf.push(request);
        }
      }
      const maxBytes = this.upstream.maxMessageBytes;
      const planned: Array<{ publish: Publish; owners: Set<R> }> = [];
      let tooLarge: R | undefined;
      for (let start = 0; start < rows.length; ) {
        const publish = nextPublish(rows, start, maxBytes, this.upstream.maxPointsPerPublish);
        if ('oversized' in publish) {
          // Only when ThingsBoard announced a smaller limit after the items were built: rare, so plan again without it.
          tooLarge = ownerOf[start]!;
          this.tooLarge(tooLarge, `${publish.bytes} bytes exceed ThingsBoard's limit of ${maxBytes}`);
          break;
        }
        planned.push({ publish, owners: new Set(ownerOf.slice(start, start + publish.rows)) });
        start += publish.rows;
      }
      if (!tooLarge) return planned;
      requests = requests.filter((request) => request !== tooLarge);
    }
  }
}

interface Request extends BatchedUplink {
  readonly answer: (outcome: UplinkOutcome) => void;
  answered: boolean;
}

/**
 * The direct path (outbox.enabled false): a device is told "created" only once the broker has acknowledged
 * every publish carrying its items. While the broker is unreachable devices hear 5.03 and keep their readings.
 */
export function createDirectUplink(upstream: Upstream, presence: DevicePresence): Uplink {
  function answer(request: Request, outcome: UplinkOutcome): void {
    if (request.answered) return;
    request.answered = true;
    request.answer(outcome);
  }

  const batcher = new TurnBatcher<Request>(
    upstream,
    (publish, owners) => {
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
    },
    (request, reason) => answer(request, { status: 'too-large', reason }),
  );

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
      return new Promise((resolve) => batcher.add({ rows: items, answer: resolve, unacknowledged: 0, answered: false }));
    },
  };
}
