// Persistent MQTT sessions (CONNECT with clean session false): what a device subscribed to, kept while it
// is away, and across restarts in the session store, so its subscriptions are open again the moment it
// reconnects. The RPCs that arrive meanwhile are not kept here: they queue in the device's session in the
// bridge (sessions.rpcQueueTtlMs, sessions.rpcQueueMax), as for every transport, and follow as soon as the
// subscription is open again. Written only when a session starts, ends or changes what it subscribes to.
import type { LRUCache } from 'lru-cache';
import { boundedCache } from '../../bounded-cache.js';
import type { JournalEntry } from '../../coap/observe-journal.js';
import type { MqttSessionJournal, SavedMqttSession } from '../../state/session-store.js';

/** Filter → granted QoS. */
export type SavedSubscriptions = ReadonlyMap<string, 0 | 1>;

interface Session {
  readonly filters: Map<string, 0 | 1>;
  /** Its row in the session store, while there is one. */
  entry: JournalEntry | undefined;
}

export class MqttSessions {
  private readonly saved: LRUCache<string, Session>;

  /**
   * `max`: sessions kept; the least recently used is forgotten first. `ttlMs`: a session unused this long is
   * forgotten (0: never). `journal`: where they are written down; absent: memory only.
   */
  constructor(
    max: number,
    ttlMs: number,
    private readonly journal?: MqttSessionJournal,
  ) {
    this.saved = boundedCache(max, {
      // The age counts from the device's last connect or disconnect (touch).
      ...(ttlMs > 0 ? { ttl: ttlMs, updateAgeOnGet: true } : {}),
      // A session pushed out by the bound or by its age leaves the disk too.
      dispose: (session, _key, reason) => {
        if (reason === 'evict' || reason === 'expire') this.unwrite(session);
      },
    });
  }

  /** Sessions an earlier run wrote down, back as they were (their age counts from now). */
  restore(saved: ReadonlyArray<{ readonly entry: JournalEntry; readonly saved: SavedMqttSession }>): void {
    for (const { entry, saved: session } of saved) this.saved.set(session.key, { filters: new Map(session.subscriptions), entry });
  }

  /**
   * The session of `key` (device and client id) as the device connects: with clean session its saved
   * state is dropped (MQTT 3.1.1 §3.1.2.4); otherwise it is resumed, if there is one, or begun.
   */
  resume(key: string, clean: boolean): SavedSubscriptions | undefined {
    const existing = this.saved.get(key);
    if (clean) {
      if (existing) {
        this.saved.delete(key);
        this.unwrite(existing);
      }
      return undefined;
    }
    if (existing) return existing.filters;
    const session: Session = { filters: new Map(), entry: undefined };
    this.saved.set(key, session);
    this.write(key, session);
    return undefined;
  }

  remember(key: string, filter: string, qos: 0 | 1): void {
    const session = this.saved.get(key);
    if (!session || session.filters.get(filter) === qos) return;
    session.filters.set(filter, qos);
    this.write(key, session);
  }

  forgetFilter(key: string, filter: string): void {
    const session = this.saved.get(key);
    if (session?.filters.delete(filter)) this.write(key, session);
  }

  /** The device of `key` went away: its session's age counts from now. */
  touch(key: string): void {
    this.saved.get(key);
  }

  /** Sessions kept now. */
  get size(): number {
    return this.saved.size;
  }

  private write(key: string, session: Session): void {
    if (!this.journal) return;
    const saved: SavedMqttSession = { key, subscriptions: [...session.filters] };
    if (session.entry) this.journal.update(session.entry, saved);
    else session.entry = this.journal.add(saved);
  }

  private unwrite(session: Session): void {
    if (session.entry) this.journal?.remove(session.entry);
    session.entry = undefined;
  }
}
