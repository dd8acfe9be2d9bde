import { createHash } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import pino, { type DestinationStream, type Logger } from 'pino';
import { boundedCache } from './bounded-cache.js';

// Defence in depth: code logs device names, never credentials, but if an object carrying one is ever
// logged these paths are censored.
const REDACTED_PATHS = [
  'token',
  'accessToken',
  'password',
  'psk',
  'key',
  '*.token',
  '*.accessToken',
  '*.password',
  '*.psk',
  '*.key',
  'upstream.accessToken',
  'upstream.password',
  'devices[*].token',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'coap2mqtt' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

/**
 * A short fingerprint of a secret, so a technician can tell which token a device used without the token
 * itself reaching the logs: compare with `printf %s TOKEN | sha256sum | cut -c1-8`.
 */
export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 8);
}

/**
 * Decides whether an event worth a log line has been logged recently for the same key, so a device
 * retrying with a bad token every second produces one line per window instead of a flood.
 */
export class LogOncePer {
  private readonly seen: LRUCache<string, true>;

  constructor(windowMs: number, maxKeys = 10_000) {
    this.seen = boundedCache(maxKeys, { ttl: windowMs });
  }

  /** True the first time a key is seen within the window. */
  first(key: string): boolean {
    if (this.seen.has(key)) return false;
    this.seen.set(key, true);
    return true;
  }
}

/** mqtt://user:secret@host → mqtt://host: URLs may carry credentials, which never go to logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = '';
    parsed.password = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return '(unparseable URL)';
  }
}
