// At start: what the session store kept goes back where it was. Queued RPCs first, so each device's RPC
// observation, replayed next, finds them and delivers them behind its confirmation.
import type { Logger } from 'pino';
import type { Bridge } from '../bridge/index.js';
import type { CoapMessageLayer } from '../coap/message-layer.js';
import type { DatagramTransport } from '../coap/transport.js';
import type { RestoredSessions, SessionStore } from './session-store.js';

/**
 * Relations replayed per turn of the event loop: their confirmations go out between turns, so the
 * devices' ACKs are read as they come instead of overflowing the socket's buffer (measured: 10,000
 * notifications sent at once lost 8,650 ACKs).
 */
const RELATIONS_PER_TURN = 256;

export interface RestoreSummary {
  readonly restored: number;
  /** Replayed and refused by the routes: the device is gone, or its token or identity changed. */
  readonly refused: number;
  /** Their transport is not running now (DTLS turned off), or they cannot be read back. */
  readonly dropped: number;
  readonly rpcs: number;
}

export async function restoreSessions(
  store: SessionStore,
  restored: RestoredSessions,
  bridge: Bridge,
  messageLayer: CoapMessageLayer,
  transports: readonly DatagramTransport[],
  log: Logger,
): Promise<RestoreSummary> {
  const started = performance.now();
  bridge.restoreQueuedRpcs(restored);
  const byName = new Map(transports.map((transport) => [transport.name, transport]));
  let refused = 0;
  let dropped = restored.unreadable;
  let done = 0;
  const { observations } = restored;
  for (let start = 0; start < observations.length; start += RELATIONS_PER_TURN) {
    const outcomes: Array<Promise<'restored' | 'refused'>> = [];
    for (const { entry, saved } of observations.slice(start, start + RELATIONS_PER_TURN)) {
      const transport = byName.get(saved.peer.transport);
      if (!transport?.restore) {
        store.remove(entry);
        dropped++;
        continue;
      }
      outcomes.push(messageLayer.restoreObservation(transport.restore(saved.peer), entry, saved));
    }
    for (const outcome of await Promise.all(outcomes)) {
      if (outcome === 'restored') done++;
      else refused++;
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const summary = { restored: done, refused, dropped, rpcs: restored.rpcs.length };
  if (observations.length > 0 || restored.rpcs.length > 0 || dropped > 0) {
    log.info(
      { ...summary, ms: Math.round(performance.now() - started) },
      'device sessions restored from before the restart: each Observe relation is confirmed with a notification of the current state; refused ones belong to devices removed or given new credentials meanwhile',
    );
  }
  return summary;
}
