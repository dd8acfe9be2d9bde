import { createHash } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import { boundedCache } from './bounded-cache.js';

// Defence in depth: code logs device names, never credentials, but if an object carrying one is ever
// logged these paths are censored.
const SECRET_FIELDS = ['token', 'accessToken', 'password', 'psk', 'key', 'keyHex', 'secret', 'secretKey', 'privateKey', 'provisionDeviceSecret'];
const REDACTED_PATHS = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((field) => `*.${field}`),
  'upstream.accessToken',
  'upstream.password',
  'devices[*].token',
  'devices[*].psk',
];

export interface LoggerOptions {
  readonly level: string;
  /** Human-readable lines (pino-pretty) instead of JSON: 'auto' when stdout is a terminal. */
  readonly pretty?: 'auto' | 'always' | 'never';
}

export function createLogger(options: string | LoggerOptions, destination?: DestinationStream): Logger {
  const { level, pretty = 'never' } = typeof options === 'string' ? { level: options } : options;
  const human = destination === undefined && (pretty === 'always' || (pretty === 'auto' && process.stdout.isTTY === true));
  return pino(
    {
      level,
      base: { service: 'coap2mqtt' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    human ? prettyStream() : destination,
  );
}

/**
 * For a technician at a terminal. Loaded only then (journald gets JSON, which it stores and filters by
 * field), and synchronously in this thread: a worker thread would cost memory for a few lines a minute.
 */
function prettyStream(): DestinationStream {
  const require = createRequire(import.meta.url);
  const pretty = require('pino-pretty') as (options: Record<string, unknown>) => DestinationStream;
  return pretty({
    colorize: true,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname,service',
    messageFormat: '{if component}[{component}] {end}{msg}',
    hideObject: false,
    sync: true,
  });
}

/**
 * One logger per component (log.components overrides log.level for some), handed out by name so a
 * reload can change their levels: `debug` for the DTLS side while chasing a handshake problem, say.
 */
export class ComponentLoggers {
  private readonly loggers = new Map<string, Logger>();

  constructor(
    private readonly root: Logger,
    private levels: Readonly<Record<string, string>> = {},
  ) {}

  for(component: string): Logger {
    let logger = this.loggers.get(component);
    if (!logger) {
      logger = this.root.child({ component });
      logger.level = this.levels[component] ?? this.root.level;
      this.loggers.set(component, logger);
    }
    return logger;
  }

  /** New levels for the root and every component logger handed out so far. */
  setLevels(level: string, levels: Readonly<Record<string, string>>): void {
    this.root.level = level;
    this.levels = levels;
    for (const [component, logger] of this.loggers) logger.level = levels[component] ?? level;
  }
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
