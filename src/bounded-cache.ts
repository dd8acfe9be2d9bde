// lru-cache with `max` allocates its index arrays for `max` entries up front: about 3 MB for 100,000
// entries with a TTL, paid at start by a gateway serving ten devices. `maxSize` with every entry
// counting 1 is the same bound, with storage that grows as entries arrive.
import { LRUCache } from 'lru-cache';

export type BoundedCacheOptions<K extends {}, V extends {}> = Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'>;

/** An LRU cache of at most `maxEntries` entries that takes memory only as it fills. */
export function boundedCache<K extends {}, V extends {}>(maxEntries: number, options: BoundedCacheOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: maxEntries, sizeCalculation: () => 1 } as LRUCache.Options<K, V, unknown>);
}
