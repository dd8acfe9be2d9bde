// Phase 1 of a start: what the gateway keeps on disk. The state directory, the MQTT client id, the
// attribute cache, the outbox file and the session store, each opened once and registered to close last
// but one (the ops endpoint outlives them).
import { randomBytes } from 'node:crypto';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/load.js';
import { createDirectories } from '../config/paths.js';
import { AttributeStore } from '../devices/attribute-store.js';
import type { Parts } from '../lifecycle.js';
import type { ComponentLoggers } from '../log.js';
import { OutboxStore, StoreOpenError } from '../outbox/store.js';
import { SessionStore, type RestoredSessions } from '../state/session-store.js';
import { StartupError } from '../startup-error.js';

export interface GatewayState {
  /** state.dir, absolute. */
  readonly stateDir: string;
  readonly clientId: string;
  readonly attributes: AttributeStore;
  /** Set when outbox.enabled. */
  readonly outboxStore: OutboxStore | undefined;
  /** Set when sessions.persist and the file is usable. */
  readonly sessionStore: SessionStore | undefined;
}

export function openState(config: GatewayConfig, logs: ComponentLoggers, parts: Parts): GatewayState {
  const stateDir = prepareStateDir(config.state.dir);
  const clientId = config.upstream.clientId || persistentClientId(stateDir);
  // After the message layer and upstream stop (relations ended on the way out stay written, to come back
  // at the next start; an RPC arriving until then is kept too): registered first, closed late.
  const sessionStore = config.sessions.persist ? openSessionStore(stateDir, logs.for('sessions')) : undefined;
  if (sessionStore) parts.add('session store', sessionStore, (store) => store.close());
  let attributes: AttributeStore;
  try {
    attributes = AttributeStore.open(join(stateDir, 'attributes.json'), logs.for('attribute-cache'));
  } catch (error) {
    throw new StartupError(`cannot read the attribute cache in ${stateDir}: ${(error as Error).message}`);
  }
  parts.add('attribute cache', attributes, (store) => store.close());
  const outboxStore = config.outbox.enabled ? openOutboxStore(stateDir, config.outbox.synchronous, logs.for('outbox')) : undefined;
  if (outboxStore) parts.add('outbox file', outboxStore, (store) => store.close());
  return { stateDir, clientId, attributes, outboxStore, sessionStore };
}

/** What the session store kept; a read failing past the check at open costs the kept sessions, never the start. */
export function readSessions(store: SessionStore, maxObservations: number, log: Logger): RestoredSessions | undefined {
  try {
    return store.restore(maxObservations);
  } catch (error) {
    log.error({ reason: (error as Error).message }, 'the device sessions kept from before the restart could not be read back; starting without them (devices register again once their relations time out)');
    return undefined;
  }
}

/**
 * The session store in the state directory. Without one the gateway still runs: relations then live in
 * memory only, and a clean stop tells their observers to register again.
 */
function openSessionStore(stateDir: string, log: Logger): SessionStore | undefined {
  const opened = SessionStore.open(join(stateDir, 'sessions.sqlite'), log);
  if (opened.status === 'unusable') {
    log.error({ reason: opened.reason }, 'device sessions cannot be kept across restarts this run (Observe relations and queued RPCs live in memory only)');
    return undefined;
  }
  if (opened.movedAside) {
    log.error(
      { file: opened.movedAside },
      'the device sessions file could not be read; it was moved aside and a new one started. Devices that observed before must register again (they will once their relation times out)',
    );
  }
  return opened.store;
}

/** The outbox file in the state directory; an unreadable one is moved aside (and said so), never deleted. */
function openOutboxStore(stateDir: string, synchronous: 'full' | 'normal', log: Logger): OutboxStore {
  const path = join(stateDir, 'outbox.sqlite');
  try {
    const { store, movedAside } = OutboxStore.open(path, synchronous);
    if (movedAside) log.error({ file: movedAside }, 'the outbox file could not be read; it was moved aside (kept for recovery) and a new one started');
    return store;
  } catch (error) {
    throw new StartupError(error instanceof StoreOpenError ? error.message : `cannot open the outbox ${path}: ${(error as Error).message}`);
  }
}

function prepareStateDir(dir: string): string {
  const absolute = resolve(dir);
  try {
    createDirectories(absolute);
    accessSync(absolute, constants.W_OK);
  } catch (error) {
    throw new StartupError(`state.dir "${absolute}" cannot be created or is not writable: ${(error as Error).message}`);
  }
  return absolute;
}

/**
 * The MQTT client id when none is configured: host name plus a random suffix, created on first start and
 * kept in the state directory. Brokers evict an older session with the same id, and many boxes share
 * a host name like "raspberrypi".
 */
function persistentClientId(stateDir: string): string {
  const file = join(stateDir, 'mqtt-client-id');
  try {
    const stored = readFileSync(file, 'utf8').trim();
    if (stored !== '') return stored;
  } catch {
    // First start: create it below.
  }
  const id = `coap2mqtt-${hostname().replace(/[^\w.-]/g, '').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(file, `${id}\n`);
  } catch (error) {
    throw new StartupError(`cannot write ${file}: ${(error as Error).message}`);
  }
  return id;
}
