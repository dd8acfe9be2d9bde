// The durable store-and-forward queue between the bridge and ThingsBoard.
import { BOOLEAN, integer, oneOf } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const outbox = {
  enabled: setting({
    doc: 'Keep uplinks (telemetry, client attributes, RPC replies, claims) that ThingsBoard cannot take at once in a durable store, answer the device 2.01 once they are safe there, and forward them upstream from there in order (outbox.mode says when: only when needed, or always). With false, a device is answered only after ThingsBoard\'s PUBACK and gets 5.03 while the broker is unreachable; nothing is written to disk.',
    format: BOOLEAN,
    default: true,
    env: 'COAP2MQTT_OUTBOX_ENABLED',
  }),
  mode: setting({
    doc: '"spill": while ThingsBoard is connected, nothing waits in the outbox and the in-flight window has room, a reading goes straight upstream and the device is answered on the PUBACK, with nothing written to disk; when the connection is down, the window full, the PUBACK later than spillAfterMs, or earlier readings still wait, it is stored first (answered once durable) and sent from the outbox in order. "always": every reading is stored before the device is answered and sent from the store, at about 5 KB written per reading at low rates, less as readings share a commit (2.6 KB at 100/s, 0.5 KB at 1,000/s; see docs/outbox.md).',
    format: oneOf(['spill', 'always']),
    default: 'spill',
    env: 'COAP2MQTT_OUTBOX_MODE',
  }),
  spillAfterMs: setting({
    doc: 'With mode "spill": how long a reading sent straight upstream may wait for the broker\'s PUBACK before it is stored instead (and the device answered once it is durable). Its publish stays on its way and the stored copy waits for it: if the PUBACK comes, the copy is dropped; if the connection is lost first, the copy is sent, and ThingsBoard may see the reading twice (QoS 1).',
    format: integer(50, 60_000),
    default: 2_000,
    env: 'COAP2MQTT_OUTBOX_SPILL_AFTER_MS',
  }),
  maxBytes: setting({
    doc: 'Most uplink data the outbox keeps, in bytes (its file on disk is about as large). When a long outage fills it, the oldest readings are dropped first, logged and counted.',
    format: integer(1_048_576, 1_099_511_627_776),
    default: 268_435_456,
    env: 'COAP2MQTT_OUTBOX_MAX_BYTES',
  }),
  maxAgeHours: setting({
    doc: 'Readings older than this are dropped from the outbox without being sent (logged and counted); 0 keeps them until maxBytes forces them out.',
    format: integer(0, 87_600),
    default: 168,
    env: 'COAP2MQTT_OUTBOX_MAX_AGE_HOURS',
  }),
  minFreeDiskBytes: setting({
    doc: 'Free space to leave on the state directory\'s file system for the rest of the box (logs, updates): below it new uplinks are answered 5.03 instead of being stored. 0 leaves it to the disk filling up, which is also answered 5.03.',
    format: integer(0, 1_099_511_627_776),
    default: 67_108_864,
    env: 'COAP2MQTT_OUTBOX_MIN_FREE_DISK_BYTES',
  }),
  synchronous: setting({
    doc: '"full": each commit reaches the storage medium before devices are answered, so acknowledged readings survive a power cut (one fdatasync of the WAL per group commit, on a background thread: commits that arrive meanwhile share the next one). "normal": they survive a crash or kill of the gateway but a power cut may lose the last moments; answers do not wait for the disk, which matters on slow SD cards.',
    format: oneOf(['full', 'normal']),
    default: 'full',
    env: 'COAP2MQTT_OUTBOX_SYNCHRONOUS',
  }),
  shutdownFlushMs: setting({
    doc: 'On SIGTERM, how long to wait for ThingsBoard to acknowledge what is already on its way before closing (what is not acknowledged stays in the outbox for the next start).',
    format: integer(0, 600_000),
    default: 5_000,
    env: 'COAP2MQTT_OUTBOX_SHUTDOWN_FLUSH_MS',
  }),
};

export type OutboxConfig = ConfigOf<typeof outbox>;
