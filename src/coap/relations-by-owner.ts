// Each device's Observe relations, so a request from a new address finds them at once. A device has one or
// two (attributes, RPC): a lone relation is held as itself, not in a one-element array.
import type { Relation } from './observe-relation.js';

export class RelationsByOwner {
  private readonly byOwner = new Map<string, Relation | Relation[]>();

  /**
   * Visits each relation of `owner`; without allocating for a lone one (this runs for every authenticated
   * request). Several are visited from a copy: a visit may end some of them.
   */
  forEachOf(owner: string, visit: (relation: Relation) => void): void {
    const indexed = this.byOwner.get(owner);
    if (indexed === undefined) return;
    if (!Array.isArray(indexed)) visit(indexed);
    else for (const relation of [...indexed]) visit(relation);
  }

  add(owner: string, relation: Relation): void {
    const indexed = this.byOwner.get(owner);
    if (indexed === undefined) this.byOwner.set(owner, relation);
    else if (Array.isArray(indexed)) indexed.push(relation);
    else this.byOwner.set(owner, [indexed, relation]);
  }

  delete(owner: string, relation: Relation): void {
    const indexed = this.byOwner.get(owner);
    if (indexed === relation) this.byOwner.delete(owner);
    else if (Array.isArray(indexed)) {
      const rest = indexed.filter((each) => each !== relation);
      if (rest.length === 0) this.byOwner.delete(owner);
      else this.byOwner.set(owner, rest.length === 1 ? rest[0]! : rest);
    }
  }
}
