// At start: what the session store kept goes back where it was, before any device or ThingsBoard can
// speak. Queued RPCs first, numbered before any new one, and the persistent MQTT sessions; then each relation's registration is replayed
// through the device API (the CoAP front end) and held. Once the transports listen, the held relations are confirmed (wakeRestored).
import type { Bridge } from '../bridge/index.js';
import type { CoapMessageLayer } from '../coap/message-layer.js';
import type { DatagramTransport } from '../coap/transport.js';
import type { RestoredSessions, SessionStore } from './session-store.js';

export interface RestoreSummary {
  readonly restored: number;
  /** Replayed and refused by the device API: the device is gone, or its token or identity changed. */
  readonly refused: number;
  /** Their transport is not running now (DTLS turned off), they could not be read back, or beyond coap.maxObservations. */
  readonly dropped: number;
  readonly rpcs: number;
  /** Persistent MQTT sessions back in place (dropped, and counted there, when mqttDevices is off now). */
  readonly mqttSessions: number;
}

/** Replays what `store` kept; relations are held (nothing is sent) until the message layer wakes them. */
export async function restoreSessions(
  store: SessionStore,
  restored: RestoredSessions,
  bridge: Bridge,
  messageLayer: CoapMessageLayer,
  transports: readonly DatagramTransport[],
  mqtt: { restoreSessions(saved: RestoredSessions['mqttSessions']): void } | undefined,
): Promise<RestoreSummary> {
  bridge.restoreQueuedRpcs(restored);
  if (mqtt) mqtt.restoreSessions(restored.mqttSessions);
  else for (const { entry } of restored.mqttSessions) store.remove(entry);
  const byName = new Map(transports.map((transport) => [transport.name, transport]));
  let refused = 0;
  let dropped = restored.unreadable + restored.overLimit + (mqtt ? 0 : restored.mqttSessions.length);
  const outcomes: Array<Promise<'restored' | 'refused'>> = [];
  for (const { entry, saved } of restored.observations) {
    const transport = byName.get(saved.peer.transport);
    if (!transport?.restore) {
      store.remove(entry);
      dropped++;
      continue;
    }
    outcomes.push(messageLayer.restoreObservation(transport.restore(saved.peer), entry, saved, { hold: true }));
  }
  let done = 0;
  for (const outcome of await Promise.all(outcomes)) {
    if (outcome === 'restored') done++;
    else refused++;
  }
  return { restored: done, refused, dropped, rpcs: restored.rpcs.length, mqttSessions: mqtt ? restored.mqttSessions.length : 0 };
}
