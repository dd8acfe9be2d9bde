// Store-and-forward between the bridge and ThingsBoard. A device's uplink is answered only once its rows are
// committed (group commit: everything that arrived in one turn of the event loop shares one transaction),
// then rows are published in sequence order, many per publish, and deleted once the broker acknowledges
// them. After a lost connection everything unacknowledged is sent again from the oldest, in order: QoS 1,
// so duplicates are possible, losses and reordering are not.
//
// This class decides what each commit does; its parts each keep one concern: GroupCommit (when to commit
// and answer), Delivery (publishing in order), AcknowledgedRows (deletions to come), DiskSpace (free space,
// a full disk), Retention (quota, age, oversized rows).
import type { Logger } from 'pino';
import type { Uplink } from '../bridge/upstream-port.js';
import type { OutboxConfig } from '../config/load.js';
import type { Device, UplinkOutcome } from '../model.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import { AcknowledgedRows } from './acknowledged-rows.js';
import { newOutboxCounters } from './counters.js';
import { Delivery, type DirectDelivery, type OutboxUpstream, type Pending } from './delivery.js';
import { DiskSpace, STORAGE_RETRY_SECONDS } from './disk-space.js';
import { ACCEPTED, GroupCommit, type Waiting } from './group-commit.js';
import { Retention } from './retention.js';
import { StoreUnavailableError, recordBytes, type Acknowledged, type OutboxStore } from './store.js';

export type { DirectDelivery, OutboxUpstream } from './delivery.js';

export interface OutboxOptions extends Omit<OutboxConfig, 'enabled' | 'synchronous'> {
  /** The directory holding the store, watched for free space. */
  readonly dir: string;
}

export interface OutboxStats {
  /** Rows stored and not yet acknowledged upstream, and their bytes. */
  readonly records: number;
  readonly bytes: number;
  /** Age of the oldest stored row; undefined when empty. */
  readonly oldestAgeMs: number | undefined;
  /** Publishes waiting for their PUBACK. */
  readonly inflight: number;
  /** Readings answered 2.01 since start: those that went straight upstream plus those stored first. */
  readonly accepted: number;
  /** Readings answered on the broker's PUBACK without touching the disk (mode "spill"). */
  readonly direct: number;
  /** Readings stored in the outbox before their device was answered. */
  readonly spilled: number;
  /** Rows acknowledged upstream since start. */
  readonly delivered: number;
  readonly publishes: number;
  /** Rows published again after the connection was lost before their PUBACK (possible duplicates upstream). */
  readonly resent: number;
  readonly dropped: { readonly quota: number; readonly expired: number; readonly oversized: number };
  /** Uplinks answered 5.03 instead of stored, by cause. */
  readonly rejected: { readonly storage: number; readonly lowDisk: number; readonly stopping: number };
}

const SWEEP_INTERVAL_MS = 5_000;
const STOPPING_RETRY_SECONDS = 5;

export class Outbox implements Uplink {
  private readonly counters = newOutboxCounters();
  private readonly acknowledged = new AcknowledgedRows();
  private readonly disk: DiskSpace;
  private readonly intake: GroupCommit;
  private readonly delivery: Delivery;
  private readonly retention: Retention;
  private stopping = false;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: OutboxStore,
    upstream: OutboxUpstream,
    /** Makes sure ThingsBoard knows the device on this session before its data (v1/gateway/connect). */
    announce: (device: Device) => void,
    private readonly options: OutboxOptions,
    private readonly log: Logger,
  ) {
    this.disk = new DiskSpace(store, options, this.counters, log);
    this.intake = new GroupCommit(store, () => this.flush(), this.counters, this.disk);
    const hooks = {
      acknowledged: () => this.intake.scheduleDeletes(this.acknowledged.waitingDeletion),
      oversized: () => {
        this.retention.countOversized();
        this.intake.schedule();
      },
    };
    this.delivery = new Delivery(store, upstream, announce, this.acknowledged, this.counters, hooks, log);
    this.retention = new Retention(store, options, this.counters, this.delivery, this.disk, log);
    upstream.onReady(() => this.delivery.pump());
  }

  /** Starts the housekeeping (age, free space, stalls) and, if upstream is ready, delivery of what is stored. */
  start(): void {
    if (this.store.records > 0) {
      const oldest = this.store.oldestCreatedAt();
      this.log.info(
        { records: this.store.records, bytes: this.store.bytes, oldestAgeMs: oldest === undefined ? undefined : Date.now() - oldest },
        'outbox holds readings from before; delivering them first',
      );
    }
    this.store.ensureReserve();
    this.sweep();
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
    this.delivery.pump();
  }

  /**
   * Stores the items, answering once they are durable. `delivered`: they were published straight upstream
   * already and are stored because the PUBACK is late (or the connection was lost before it).
   */
  send(device: Device, items: readonly UplinkItem[], delivered?: DirectDelivery): Promise<UplinkOutcome> {
    if (this.stopping) {
      this.counters.rejected.stopping += items.length;
      return Promise.resolve({ status: 'unavailable', reason: 'the gateway is shutting down', retryAfterSeconds: STOPPING_RETRY_SECONDS });
    }
    const lowDisk = this.disk.lowDiskReason;
    if (lowDisk !== undefined) {
      this.counters.rejected.lowDisk += items.length;
      return Promise.resolve({ status: 'unavailable', reason: lowDisk, retryAfterSeconds: STORAGE_RETRY_SECONDS });
    }
    if (items.length === 0) return Promise.resolve(ACCEPTED);
    const createdAt = Date.now();
    const records = items.map((item): Pending => {
      const bytes = recordBytes({ device: device.name, type: device.type, body: item.body });
      return { kind: item.kind, device: device.name, type: device.type, body: item.body, points: item.points, createdAt, bytes, delivered };
    });
    return new Promise<UplinkOutcome>((resolve) => this.intake.add(records, resolve));
  }

  /**
   * Nothing is stored, or on its way into the store, that ThingsBoard has not acknowledged: a reading
   * sent straight upstream now cannot overtake an earlier one of its device.
   */
  get drained(): boolean {
    return this.intake.waitingRows === 0 && this.store.records - this.acknowledged.count <= 0 && !this.intake.closed;
  }

  /** Readings answered on their PUBACK without being stored (counted here so /metrics shows both paths). */
  countDirect(readings: number): void {
    this.counters.accepted += readings;
    this.counters.direct += readings;
  }

  /**
   * A direct publish whose readings were stored meanwhile has settled (its DirectDelivery says how): copies
   * of acknowledged readings are dropped as delivered, those of lost ones go out in their turn.
   */
  directSettled(): void {
    this.delivery.directSettled();
  }

  /**
   * Why new uplinks are answered 5.03 instead of stored, if they are now: shutting down, below
   * outbox.minFreeDiskBytes, or the last commit found the disk full (until a commit succeeds again).
   */
  get refusing(): 'stopping' | 'low-disk' | 'disk-full' | undefined {
    if (this.stopping) return 'stopping';
    if (this.disk.lowDiskReason !== undefined) return 'low-disk';
    return this.disk.full ? 'disk-full' : undefined;
  }

  stats(): OutboxStats {
    const oldest = this.intake.closed ? undefined : this.store.oldestCreatedAt();
    return {
      records: this.store.records,
      bytes: this.store.bytes,
      oldestAgeMs: oldest === undefined ? undefined : Math.max(0, Date.now() - oldest),
      inflight: this.delivery.inflightCount,
      ...this.counters,
      dropped: { ...this.counters.dropped },
      rejected: { ...this.counters.rejected },
    };
  }

  /**
   * Stops taking uplinks, commits what was accepted, waits up to shutdownFlushMs for publishes already on
   * their way to be acknowledged, and closes the store. Whatever is not acknowledged stays for the next start.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.delivery.halt();
    clearInterval(this.sweepTimer);
    this.intake.cancelDeleteTimer();
    // What waits for the commit spacing is committed now.
    this.flush();
    await this.delivery.settle(this.options.shutdownFlushMs);
    this.flush();
    // Devices whose rows were committed hear back once they are on disk, before the file closes.
    await this.intake.close();
    const { records, bytes } = this.store;
    this.store.close();
    const unacknowledged = this.delivery.inflightCount;
    this.log.info({ records, bytes, unacknowledged }, records > 0 ? 'outbox closed; its readings wait for the next start' : 'outbox closed, empty');
  }

  /** One group commit: new rows in, acknowledged rows out; then the devices are answered. */
  private flush(): void {
    const taken = this.intake.take(this.stopping);
    if (!taken) return;
    const { records, waiters } = taken;
    const acknowledged = this.acknowledged.take();
    if (records.length === 0 && acknowledged.length === 0) return;
    if (records.length === 0 && this.disk.short) {
      this.commitDeletions(acknowledged);
      return;
    }
    // Checked with the commits, not only on a timer: a burst must not run past the reserve before the next look.
    if (records.length > 0) this.disk.checkBefore(records);
    const lowDisk = this.disk.lowDiskReason;
    if (records.length > 0 && lowDisk !== undefined) {
      this.counters.rejected.lowDisk += records.length;
      for (const { waiter } of waiters) waiter({ status: 'unavailable', reason: lowDisk, retryAfterSeconds: STORAGE_RETRY_SECONDS });
      this.commitDeletions(acknowledged);
      return;
    }
    // After a full disk, new rows wait until there is room again (delivered rows freed pages, or the disk
    // got space) and the reserve is back: it is for deleting and checkpointing, not for more readings.
    if (records.length > 0 && this.disk.full && !this.disk.roomAgain()) {
      this.counters.rejected.storage += records.length;
      for (const { waiter } of waiters) {
        waiter({ status: 'unavailable', reason: 'the gateway cannot store readings: the disk is full', retryAfterSeconds: STORAGE_RETRY_SECONDS });
      }
      this.commitDeletions(acknowledged);
      return;
    }
    this.commit(records, waiters, acknowledged);
  }

  private commit(records: Pending[], waiters: readonly Waiting[], acknowledged: Acknowledged[]): void {
    const caughtUp = this.delivery.caughtUp;
    let seqs: number[];
    this.intake.committing();
    try {
      seqs = this.store.commit(records, acknowledged);
    } catch (error) {
      this.disk.failed(error, records.length);
      for (const { waiter } of waiters) {
        waiter({ status: 'unavailable', reason: `the gateway cannot store readings: ${(error as Error).message}`, retryAfterSeconds: STORAGE_RETRY_SECONDS });
      }
      if (error instanceof StoreUnavailableError && !this.disk.full) {
        this.disk.becameFull();
        // Deletions before the checkpoint: the pages they free are reused instead of the file growing.
        this.commitDeletions(acknowledged);
        this.store.checkpoint();
      } else {
        this.commitDeletions(acknowledged);
      }
      return;
    }
    this.acknowledged.deleted(acknowledged);
    if (records.length > 0) this.disk.stored();
    this.intake.answerOnceDurable(waiters);
    if (caughtUp) this.delivery.committed(records, seqs);
    this.retention.keepWithinQuota();
    this.delivery.pump();
  }

  /** Deletions on their own, a few at a time (the disk is short); what does not fit waits for the next try. */
  private commitDeletions(acknowledged: Acknowledged[]): void {
    if (acknowledged.length === 0) return;
    const left = this.store.forgetGently(acknowledged);
    const kept = new Set(left.map(({ seq }) => seq));
    this.acknowledged.deleted(acknowledged.filter(({ seq }) => !kept.has(seq)));
    if (left.length > 0) {
      this.acknowledged.putBack(left);
      this.intake.scheduleDeletes(true);
    }
  }

  private sweep(): void {
    const now = Date.now();
    this.disk.housekeep();
    this.retention.expire(now);
    this.delivery.checkStall(now);
    this.retention.reportDrops(now);
  }
}
