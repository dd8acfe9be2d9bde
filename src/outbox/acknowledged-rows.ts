// Rows ThingsBoard acknowledged whose deletion is not committed yet. Deletions ride along with the next
// commit of new rows; until then the rows are kept out of any re-read of the store, so they are not sent again.
import type { Acknowledged, StoredRecord } from './store.js';

export class AcknowledgedRows {
  /** Waiting for a commit to delete them. */
  private waiting: Acknowledged[] = [];
  /** Not deleted yet: waiting, or taken into a commit that has not been made. */
  private readonly seqs = new Set<number>();

  /** Rows acknowledged and not yet deleted. */
  get count(): number {
    return this.seqs.size;
  }

  get waitingDeletion(): boolean {
    return this.waiting.length > 0;
  }

  add(row: Pick<StoredRecord, 'seq' | 'bytes'>): void {
    this.waiting.push({ seq: row.seq, bytes: row.bytes });
    this.seqs.add(row.seq);
  }

  /** Takes the rows whose deletion goes into the next commit. */
  take(): Acknowledged[] {
    const taken = this.waiting;
    this.waiting = [];
    return taken;
  }

  /** Their deletion is committed. */
  deleted(rows: readonly Acknowledged[]): void {
    for (const { seq } of rows) this.seqs.delete(seq);
  }

  /** Not deleted this time: they go first into the next commit. */
  putBack(rows: readonly Acknowledged[]): void {
    this.waiting = rows.concat(this.waiting);
  }

  /** Rows read back from the store, less those already acknowledged. */
  withoutAcknowledged<T extends Pick<StoredRecord, 'seq'>>(rows: T[]): T[] {
    return this.seqs.size > 0 ? rows.filter((row) => !this.seqs.has(row.seq)) : rows;
  }
}
