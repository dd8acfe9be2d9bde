// What the Observe registry writes down so its relations come back after a restart or a crash, and the
// Observe numbers that keep them fresh for the observer (RFC 7641 §3.4, §4.4) without a write per
// notification. The registry only says what changed; the journal (state/session-store.ts) decides when
// it reaches the disk.
import type { PeerRecord } from './transport.js';

/** A relation as written down: enough to replay its registration through the handler at the next start. */
export interface SavedObservation {
  readonly peer: PeerRecord;
  /** The device it belongs to (ObservationOptions.owner). */
  readonly owner: string;
  readonly token: Buffer;
  readonly confirmable: boolean;
  readonly uriPath: readonly string[];
  readonly uriQuery: readonly string[];
  /** The Block2 size exponent notifications are sliced at. */
  readonly szx: number;
  /** The floor of the relation's Observe numbers in `generation` (see nextObserveWindow). */
  readonly sequence: number;
  readonly generation: number;
}

/** The journal's handle on one written-down relation. */
export interface JournalEntry {
  /** True once the relation's latest state is on disk: a clean stop need not tell its observer anything. */
  readonly kept: boolean;
}

export interface ObservationJournal {
  /** This run's number: one more than the last start's, written before any relation is restored. */
  readonly generation: number;
  add(saved: SavedObservation): JournalEntry;
  update(entry: JournalEntry, saved: SavedObservation): void;
  remove(entry: JournalEntry): void;
}

/** Observe numbers a relation may use in one run before its floor is written again. */
export const OBSERVE_WINDOW = 0x1_0000;
const SEQUENCE_MASK = 0xff_ffff;

/**
 * The first Observe number of a relation restored in `generation` from what was written in an earlier one.
 * Every number sent in generation g lies below floor + (g - written + 1) × OBSERVE_WINDOW (the registry
 * writes a new floor halfway through each window), so this one is above all of them and at most two
 * windows (2^17) ahead of the last the observer saw: fresher for it (within 2^23, RFC 7641 §3.4).
 */
export function restoredSequence(saved: Pick<SavedObservation, 'sequence' | 'generation'>, generation: number): number {
  const runs = Math.max(0, generation - saved.generation);
  return (saved.sequence + runs * OBSERVE_WINDOW) & SEQUENCE_MASK;
}

/** The number at which a relation whose floor is `floor` writes its next floor: halfway through its window. */
export function nextFloorAt(floor: number): number {
  return (floor + OBSERVE_WINDOW / 2) & SEQUENCE_MASK;
}
