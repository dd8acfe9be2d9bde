// Writes live Observe relations to the session store (observe-journal.ts), so they come back after a
// restart: once when a relation goes live or moves, and its Observe floor again halfway through its window.
import { nextFloorAt, type JournalEntry, type ObservationJournal, type SavedObservation } from './observe-journal.js';
import type { Relation } from './observe-relation.js';
import type { PeerRecord } from './transport.js';

export class RelationRecorder {
  private journal: ObservationJournal | undefined;

  /** From now on live relations are written down there (and removed when they end). */
  use(journal: ObservationJournal): void {
    this.journal = journal;
  }

  /** The store's generation now; `otherwise` while there is no store. */
  generationOr(otherwise: number): number {
    return this.journal?.generation ?? otherwise;
  }

  /** Nothing of this entry stays written. */
  remove(entry: JournalEntry): void {
    this.journal?.remove(entry);
  }

  /**
   * Writes the relation down when it is new or `moved` (a restored one is written already), when there is a
   * journal and its peer can come back.
   */
  save(relation: Relation, moved: boolean): void {
    const journal = this.journal;
    const owner = relation.options.owner;
    if (!journal || owner === undefined || relation.state !== 'active') return;
    const peer = relation.peer.transport.record?.(relation.peer);
    if (!peer) {
      // A peer that cannot come back (a DTLS session without identity): nothing of it may stay written.
      if (relation.entry) journal.remove(relation.entry);
      relation.entry = undefined;
      return;
    }
    if (relation.entry) {
      // The floor stays: a move must not put off its next write (numbers would outrun what is written).
      if (moved) journal.update(relation.entry, snapshot(relation, peer));
    } else {
      relation.floor = relation.sequence;
      relation.floorGeneration = journal.generation;
      relation.floorAt = nextFloorAt(relation.sequence);
      relation.entry = journal.add(snapshot(relation, peer));
    }
  }

  /** Writes the floor of the relation's Observe numbers again, halfway through its window (see observe-journal.ts). */
  writeFloor(relation: Relation, sequence: number): void {
    const peer = relation.peer.transport.record?.(relation.peer);
    if (!relation.entry || !this.journal || !peer) return;
    relation.floor = sequence;
    relation.floorGeneration = this.journal.generation;
    relation.floorAt = nextFloorAt(sequence);
    this.journal.update(relation.entry, snapshot(relation, peer));
  }
}

/** What the store keeps of a relation, made only when it is written (relations do not carry a copy). */
function snapshot(relation: Relation, peer: PeerRecord): SavedObservation {
  return {
    peer,
    owner: relation.options.owner ?? '',
    token: relation.token,
    confirmable: relation.confirmable,
    uriPath: relation.registration.uriPath,
    uriQuery: relation.registration.uriQuery,
    szx: relation.szx,
    sequence: relation.floor,
    generation: relation.floorGeneration,
  };
}
