// outbox.mode "spill": a reading is safe once the broker has acknowledged it OR once it is on local storage,
// so while ThingsBoard keeps up it goes straight upstream and nothing touches the disk. The outbox takes a
// reading only when the direct path cannot promise it: upstream not ready, the in-flight window full,
// earlier readings still waiting there (so each device's order holds), or a PUBACK later than
// outbox.spillAfterMs or lost with the connection. Once the outbox has drained, the direct path resumes.
//
// A spilled reading's publish stays on its way, and its stored copy waits for it: on the same connection the
// copy could not be acknowledged sooner. Should the PUBACK come, the copy is dropped; should the connection
// go first, the copy is sent (ThingsBoard may then see the reading twice, which QoS 1 allows).
import type { Logger } from 'pino';
import { TurnBatcher, type BatchedUplink } from '../bridge/deliver.js';
import type { DevicePresence } from '../bridge/presence.js';
import type { Uplink } from '../bridge/upstream-port.js';
import { LogOncePer } from '../log.js';
import type { Device, UplinkOutcome } from '../model.js';
import type { PublishOptions } from '../upstream/connection.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import type { DirectDelivery } from './outbox.js';

/** What the spilling uplink needs of the upstream connection. */
export interface SpillUpstream {
  /** Connected, and the session limits are settled. */
  readonly ready: boolean;
  readonly inflightLimit: number;
  /** Publishes waiting for their PUBACK or for a slot in the window (the outbox's included). */
  readonly outstanding: number;
  readonly maxMessageBytes: number;
  readonly maxPointsPerPublish: number;
  publish(topic: string, payload: string, options: PublishOptions): Promise<void>;
}

/** What it needs of the outbox. */
export interface SpillTarget {
  /** Nothing stored, or on its way into the store, that ThingsBoard has not acknowledged. */
  readonly drained: boolean;
  send(device: Device, items: readonly UplinkItem[], delivered?: DirectDelivery): Promise<UplinkOutcome>;
  countDirect(readings: number): void;
  directSettled(): void;
}

/** A request on the direct path; once stored, it is also its stored copy's DirectDelivery. */
interface DirectRequest extends BatchedUplink, DirectDelivery {
  readonly device: Device;
  readonly answer: (outcome: UplinkOutcome) => void;
  /** When it was sent (performance.now()). */
  readonly sentAt: number;
  answered: boolean;
  /** Handed to the outbox: the publish is late, the reading is being stored. */
  spilled: boolean;
}

const ACCEPTED: UplinkOutcome = { status: 'accepted' };

export class SpillingUplink implements Uplink {
  /** Requests sent straight upstream and not settled (PUBACK or spilled), oldest first. */
  private readonly unsettled = new Set<DirectRequest>();
  /**
   * One timer for the oldest unsettled request (a Set keeps insertion order), rather than one per request:
   * at 40,000 readings a second the per-request deadline objects were measurable garbage.
   */
  private lateTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly batcher: TurnBatcher<DirectRequest>;
  private spills = 0;
  private readonly spillLog = new LogOncePer(10 * 60_000);

  constructor(
    private readonly outbox: SpillTarget,
    private readonly upstream: SpillUpstream,
    private readonly presence: Pick<DevicePresence, 'ensureAnnounced'>,
    private readonly spillAfterMs: number,
    private readonly log: Logger,
  ) {
    this.batcher = new TurnBatcher<DirectRequest>(
      upstream,
      (publish, owners) => {
        // Untimed: the PUBACK is awaited however long it takes (the late timer spills meanwhile), so a late
        // one still lets the outbox drop its copy. The window bounds how many are outstanding.
        this.upstream.publish(publish.topic, publish.payload, { dataPoints: publish.points, untimed: true }).then(
          () => {
            for (const owner of owners) if (--owner.unacknowledged === 0) this.acknowledged(owner);
          },
          () => {
            this.spillAll('lost');
            // Their stored copies need not wait for this publish any longer.
            for (const owner of owners) owner.state = 'lost';
            this.outbox.directSettled();
          },
        );
      },
      (request, reason) => this.settle(request, { status: 'too-large', reason }),
    );
  }

  send(device: Device, items: readonly UplinkItem[]): Promise<UplinkOutcome> {
    if (!this.directPossible()) return this.outbox.send(device, items);
    this.presence.ensureAnnounced(device);
    if (items.length === 0) return Promise.resolve(ACCEPTED);
    return new Promise((answer) => {
      const request: DirectRequest = {
        rows: items,
        device,
        answer,
        sentAt: performance.now(),
        answered: false,
        spilled: false,
        state: 'waiting',
        unacknowledged: 0,
      };
      this.unsettled.add(request);
      this.lateTimer ??= this.armLateTimer(request.sentAt);
      this.batcher.add(request);
    });
  }

  /** Readings spilled since start because their PUBACK was late or lost. */
  get spilledLate(): number {
    return this.spills;
  }

  /** Straight upstream only while it keeps every promise: ready, room in the window, nothing waiting before. */
  private directPossible(): boolean {
    return this.upstream.ready && this.upstream.outstanding < this.upstream.inflightLimit && this.outbox.drained;
  }

  private acknowledged(request: DirectRequest): void {
    if (!request.spilled) {
      this.outbox.countDirect(request.rows.length);
      this.settle(request, ACCEPTED);
      return;
    }
    // Stored already (or being stored): unless a failed publish of the same request lost part of it, the
    // copy need not be sent, and the device may hear now.
    if (request.state === 'waiting') {
      request.state = 'acknowledged';
      this.answer(request, ACCEPTED);
    }
    this.outbox.directSettled();
  }

  /**
   * Every request still waiting goes to the outbox, oldest first: the one that is late and those sent after
   * it, so nothing of a device can overtake its earlier readings on the way through the outbox.
   */
  private spillAll(why: 'late' | 'lost'): void {
    if (this.unsettled.size === 0) return;
    let readings = 0;
    for (const request of this.unsettled) {
      request.spilled = true;
      readings += request.rows.length;
      void this.outbox.send(request.device, request.rows, request).then((outcome) => this.answer(request, outcome));
    }
    this.unsettled.clear();
    this.spills += readings;
    // A lost connection is logged by the connection itself; a slow broker only here.
    if (why === 'late' && this.spillLog.first(why)) {
      this.log.warn(
        { readings, spillAfterMs: this.spillAfterMs },
        `ThingsBoard did not acknowledge within outbox.spillAfterMs (${this.spillAfterMs} ms): readings are stored in the outbox and sent from there until it keeps up again (repeats not logged for 10 minutes)`,
      );
    }
  }

  private settle(request: DirectRequest, outcome: UplinkOutcome): void {
    this.unsettled.delete(request);
    this.answer(request, outcome);
  }

  /** Fires when the request sent at `sentAt` turns late; by then it may be settled, and a younger one is the oldest. */
  private armLateTimer(sentAt: number): NodeJS.Timeout | undefined {
    if (this.stopped) return undefined;
    return setTimeout(() => this.checkLate(), Math.max(0, sentAt + this.spillAfterMs - performance.now()));
  }

  private checkLate(): void {
    this.lateTimer = undefined;
    const oldest = this.unsettled.values().next();
    if (oldest.done) return;
    if (performance.now() - oldest.value.sentAt >= this.spillAfterMs) this.spillAll('late');
    else this.lateTimer = this.armLateTimer(oldest.value.sentAt);
  }

  private answer(request: DirectRequest, outcome: UplinkOutcome): void {
    if (request.answered) return;
    request.answered = true;
    request.answer(outcome);
  }

  /**
   * Before the outbox stops: no more spilling. The devices can no longer be answered, so a reading still on
   * its way is either acknowledged upstream or retried by its device after the restart.
   */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.lateTimer);
    this.lateTimer = undefined;
  }
}
