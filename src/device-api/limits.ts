// Device-facing protection: rate limits refused as too-many-requests with the seconds until a retry can
// succeed (CoAP renders 4.29 with Max-Age, RFC 8516; HTTP 429 with Retry-After), and a block on addresses
// that try many unknown access tokens. No timers: every
// decision reads the time its request arrived, and every table is bounded (LRU), so a flood of strangers
// costs a fixed amount of memory.
import type { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { LimitsConfig } from '../config/load.js';
import { LogOncePer } from '../log.js';
import { TokenBucket } from '../net/token-bucket.js';
import type { Refusal } from './outcome.js';
import { boundedCache } from '../bounded-cache.js';
import { sourceKey } from '../net/source-key.js';

/** The `limits` configuration slice, as documented in the schema (0 turns a limit off). */
export type RequestLimitsOptions = LimitsConfig;

/** Counters for a metrics endpoint; each call returns a fresh snapshot. */
export interface RequestLimitsStats {
  /** New requests answered 4.29 by the gateway-wide limit (limits.requestsPerSecond). */
  readonly refusedGlobal: number;
  /** Requests answered 4.29 by their device's own limit (limits.deviceRequestsPerSecond). */
  readonly refusedDevice: number;
  /** Token requests answered 4.29 because their address is blocked for trying unknown tokens. */
  readonly refusedBlockedAddress: number;
  /** Addresses (IPv6: /64 prefixes) blocked now. */
  readonly addressesBlocked: number;
  /** Blocks started since the gateway started. */
  readonly addressBlocks: number;
}

/** Devices whose buckets are kept; beyond it the least recently active is forgotten (it refills meanwhile). */
const MAX_DEVICE_BUCKETS = 100_000;
/** Source addresses whose unknown tokens are counted, blocked ones included: ~300 bytes each at most. */
const MAX_SOURCES = 10_000;
const WARN_EVERY_MS = 10 * 60_000;

interface Source {
  windowStart: number;
  /** Hashes of the different unknown tokens seen in this window (at most unknownTokenFailures). */
  tokens: number[];
  /** 0: not blocked. */
  blockedUntil: number;
}

export class RequestLimits {
  private readonly counters = { refusedGlobal: 0, refusedDevice: 0, refusedBlockedAddress: 0, addressBlocks: 0 };
  private readonly global: TokenBucket | undefined;
  private readonly devices: LRUCache<string, TokenBucket> | undefined;
  private readonly sources: LRUCache<string, Source> | undefined;
  private readonly warnings = new LogOncePer(WARN_EVERY_MS);

  constructor(
    private readonly options: RequestLimitsOptions,
    private readonly log: Logger,
    now: number = Date.now(),
  ) {
    if (options.requestsPerSecond > 0) {
      this.global = new TokenBucket(options.requestsPerSecond, options.burst || options.requestsPerSecond, now);
    }
    if (options.deviceRequestsPerSecond > 0) this.devices = boundedCache(MAX_DEVICE_BUCKETS);
    if (options.unknownTokenFailures > 0) this.sources = boundedCache(MAX_SOURCES);
  }

  /**
   * The gateway-wide limit, asked by each front end for each new request before the device API runs (the CoAP message layer, the HTTP server)
   * (never for a retransmission, which the deduplication cache answers). undefined: go ahead.
   */
  admitRequest(now: number): Refusal | undefined {
    const bucket = this.global;
    if (!bucket || bucket.take(1, now)) return undefined;
    this.counters.refusedGlobal++;
    if (this.warnings.first('global')) {
      this.log.warn(
        { requestsPerSecond: this.options.requestsPerSecond, burst: bucket.burst },
        'gateway-wide request limit (limits.requestsPerSecond) reached: new requests are answered 4.29 Too Many Requests; logged again in 10 minutes at most',
      );
    }
    return tooManyRequests(bucket.waitMs(1, now), 'the gateway is busy: too many requests from all devices together');
  }

  /** One device's limit, asked by the device API once it knows which device a request speaks for. */
  admitDevice(device: string, now: number): Refusal | undefined {
    const buckets = this.devices;
    if (!buckets) return undefined;
    let bucket = buckets.get(device);
    if (!bucket) {
      bucket = new TokenBucket(this.options.deviceRequestsPerSecond, this.options.deviceBurst, now);
      buckets.set(device, bucket);
    }
    if (bucket.take(1, now)) return undefined;
    this.counters.refusedDevice++;
    if (this.warnings.first(`device ${device}`)) {
      this.log.warn(
        { device, deviceRequestsPerSecond: this.options.deviceRequestsPerSecond, deviceBurst: this.options.deviceBurst },
        'device sends more requests than limits.deviceRequestsPerSecond allows: the excess is answered 4.29 Too Many Requests; logged again for this device in 10 minutes at most',
      );
    } else {
      this.log.debug({ device }, 'device over its request limit (4.29)');
    }
    return tooManyRequests(
      bucket.waitMs(1, now),
      `too many requests from this device (limit ${this.options.deviceRequestsPerSecond}/s, burst ${this.options.deviceBurst})`,
    );
  }

  /**
   * A 4.29 for a token request from an address blocked for trying unknown tokens, whatever token it
   * carries: a guessed right one too, or guessing would go on. Asked before the token is looked up.
   */
  refuseBlockedSource(address: string, now: number): Refusal | undefined {
    const source = this.sources?.get(sourceKey(address));
    if (!source || source.blockedUntil <= now) return undefined;
    this.counters.refusedBlockedAddress++;
    this.log.debug({ peer: address }, 'token request from a blocked address refused (4.29)');
    return tooManyRequests(
      source.blockedUntil - now,
      'too many unknown access tokens from this address; token requests from it are refused for a while',
    );
  }

  /**
   * Counts a token request whose token no device has. Different tokens count; repeats of one do not, so a
   * device retrying with a stale token does not get its neighbours behind the same NAT blocked, while a
   * guesser, who must try new tokens, is stopped after unknownTokenFailures of them.
   */
  unknownToken(address: string, token: string, now: number): void {
    const sources = this.sources;
    if (!sources) return;
    const key = sourceKey(address);
    let source = sources.get(key);
    if (!source || (source.blockedUntil === 0 && now - source.windowStart >= this.options.unknownTokenWindowMs)) {
      source = { windowStart: now, tokens: [], blockedUntil: 0 };
      sources.set(key, source);
    } else if (source.blockedUntil > now) {
      return;
    } else if (source.blockedUntil !== 0) {
      // The block has run out: counting starts afresh.
      source.windowStart = now;
      source.tokens = [];
      source.blockedUntil = 0;
    }
    const hash = fnv1a(token);
    if (source.tokens.includes(hash)) return;
    source.tokens.push(hash);
    if (source.tokens.length < this.options.unknownTokenFailures) return;

    source.blockedUntil = now + this.options.unknownTokenBlockMs;
    this.counters.addressBlocks++;
    this.log.warn(
      {
        peer: address,
        blocked: key,
        unknownTokens: source.tokens.length,
        withinMs: now - source.windowStart,
        blockMs: this.options.unknownTokenBlockMs,
      },
      'address blocked: it sent too many different unknown access tokens (limits.unknownTokenFailures), as a device guessing tokens would; its token requests are answered 4.29 until the block ends. DTLS-identified devices are not affected',
    );
    source.tokens = [];
  }

  stats(now: number = Date.now()): RequestLimitsStats {
    let addressesBlocked = 0;
    // Bounded by MAX_SOURCES, and read by a metrics scrape, not per request.
    for (const source of this.sources?.values() ?? []) if (source.blockedUntil > now) addressesBlocked++;
    return { ...this.counters, addressesBlocked };
  }
}

/** Too many requests: whole seconds, at least 1, until a request would be accepted (RFC 8516 §3). */
export function tooManyRequests(waitMs: number, diagnostic: string): Refusal {
  const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
  return { problem: 'too-many-requests', reason: `${diagnostic}; retry in ${retryAfterSeconds} s`, retryAfterSeconds };
}

/** A cheap 32-bit hash: telling tokens apart needs no secrecy, and a collision only undercounts a guesser. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
