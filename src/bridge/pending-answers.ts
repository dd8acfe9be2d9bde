/**
 * Requests that ThingsBoard answers on another topic, matched by an integer id the gateway chooses
 * (attribute requests, the gateway's own RPCs). ThingsBoard sends nothing at all when it fails, so every
 * wait ends in a timeout at the latest.
 */
export class PendingAnswers<T> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (answer: T | undefined) => void; timer: NodeJS.Timeout }>();

  constructor(private readonly timeoutMs: number) {}

  /** A fresh id, and the answer for it: undefined when none came in time (or the bridge stopped). */
  open(): { readonly id: number; readonly answer: Promise<T | undefined> } {
    const id = this.nextId;
    // Ids stay positive 31-bit integers, which any server-side parser takes.
    this.nextId = id >= 0x7fffffff ? 1 : id + 1;
    const answer = new Promise<T | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, this.timeoutMs);
      this.waiting.set(id, { resolve, timer });
    });
    return { id, answer };
  }

  /** False when nothing waits for this id (answered already, timed out, or not ours). */
  settle(id: number, answer: T): boolean {
    const entry = this.waiting.get(id);
    if (!entry) return false;
    clearTimeout(entry.timer);
    this.waiting.delete(id);
    entry.resolve(answer);
    return true;
  }

  /** Gives up on everything still waiting (the request could not be sent, or the gateway stops). */
  cancel(id?: number): void {
    const ids = id === undefined ? [...this.waiting.keys()] : [id];
    for (const each of ids) {
      const entry = this.waiting.get(each);
      if (!entry) continue;
      clearTimeout(entry.timer);
      this.waiting.delete(each);
      entry.resolve(undefined);
    }
  }
}
