// Per-device state: Observe relations, queued RPCs, waits for ThingsBoard's answers, presence.
import { BOOLEAN, integer } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const sessions = {
  persist: setting({
    doc: 'Keep Observe relations and the RPCs waiting for devices in <state.dir>/sessions.sqlite, so a restart, a crash or a power cut leaves no observing device deaf and loses no RPC: after a start each relation is confirmed with a notification of the current state. Written when a relation starts, moves or ends and when an RPC is queued, never per notification. false: kept in memory only; a clean stop then tells each observer 5.03 so it registers again.',
    format: BOOLEAN,
    default: true,
    env: 'COAP2MQTT_SESSIONS_PERSIST',
  }),
  attributeRequestTimeoutMs: setting({
    doc: 'How long a device\'s GET /attributes waits for ThingsBoard\'s answer before it is told 5.04 Gateway Timeout (ThingsBoard sends no answer at all when it fails).',
    format: integer(100, 120_000),
    default: 5000,
    env: 'COAP2MQTT_SESSIONS_ATTRIBUTE_REQUEST_TIMEOUT_MS',
  }),
  clientRpcTimeoutMs: setting({
    doc: 'How long a device\'s client-side RPC (POST /rpc) waits for the rule chain\'s reply before it is told 5.04 Gateway Timeout.',
    format: integer(100, 300_000),
    default: 10_000,
    env: 'COAP2MQTT_SESSIONS_CLIENT_RPC_TIMEOUT_MS',
  }),
  rpcQueueTtlMs: setting({
    doc: 'How long a server-side RPC for a device that is not observing /rpc (a sleeping device) is kept for delivery when it next registers. Older ones are dropped and logged.',
    format: integer(1000, 7 * 86_400_000),
    default: 300_000,
    env: 'COAP2MQTT_SESSIONS_RPC_QUEUE_TTL_MS',
  }),
  rpcQueueMax: setting({
    doc: 'Most RPCs kept per sleeping device; the oldest is dropped (and logged) beyond it.',
    format: integer(0, 10_000),
    default: 20,
    env: 'COAP2MQTT_SESSIONS_RPC_QUEUE_MAX',
  }),
  idleTimeoutMs: setting({
    doc: 'A device with no observation that sends nothing for this long is disconnected upstream (v1/gateway/disconnect), so ThingsBoard shows it offline. 0 never disconnects.',
    format: integer(0, 30 * 86_400_000),
    default: 600_000,
    env: 'COAP2MQTT_SESSIONS_IDLE_TIMEOUT_MS',
  }),
  keepAliveIntervalMs: setting({
    doc: 'An observing device that has sent nothing upstream for this long gets a small attribute request on its behalf, which counts as activity in ThingsBoard (silent devices are marked inactive after 10 minutes otherwise) and refreshes the shared-attribute cache. 0 turns it off.',
    format: integer(0, 86_400_000),
    default: 240_000,
    env: 'COAP2MQTT_SESSIONS_KEEP_ALIVE_INTERVAL_MS',
  }),
};

export type SessionsConfig = ConfigOf<typeof sessions>;
