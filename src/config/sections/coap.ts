// The plain CoAP listener: its socket, retransmission memory, block-wise and Observe bounds.
import { BLOCK_SIZE, HOST, integer, PORT } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const coap = {
  host: setting({
    doc: 'Address the CoAP UDP socket listens on. "::" accepts IPv6 and IPv4 devices; "0.0.0.0" IPv4 only; a specific address limits it to one interface.',
    format: HOST,
    default: '::',
    env: 'COAP2MQTT_COAP_HOST',
  }),
  port: setting({
    doc: 'UDP port for plain CoAP (5683 is the standard port; 0 picks a free one).',
    format: PORT,
    default: 5683,
    env: 'COAP2MQTT_COAP_PORT',
  }),
  maxRequestBodyBytes: setting({
    doc: 'Largest request body accepted, in one datagram or reassembled from Block1 blocks. Larger requests get 4.13 with Size1. At most 49152 so that every reading fits one 64 KiB upstream message. (Called coap.maxPayloadBytes before 0.2.0; the old name still works, with a warning.)',
    format: integer(64, 49152),
    default: 16384,
    env: 'COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES',
  }),
  piggybackWindowMs: setting({
    doc: 'How long a confirmable request may wait for the upstream acknowledgement before the gateway sends an empty ACK and answers later in a separate response. Keep it under the devices\' 2 s ACK timeout.',
    format: integer(0, 1500),
    default: 500,
    env: 'COAP2MQTT_COAP_PIGGYBACK_WINDOW_MS',
  }),
  dedupMaxEntries: setting({
    doc: 'Hard cap on remembered (device address, message id) pairs used to recognise retransmissions for 247 s (RFC 7252 EXCHANGE_LIFETIME). Each costs about 24 bytes (memory taken as entries arrive); the default covers a steady 4,000 requests/s. Beyond the cap the oldest are forgotten early (logged once).',
    format: integer(1000, 20_000_000),
    default: 1_000_000,
    env: 'COAP2MQTT_COAP_DEDUP_MAX_ENTRIES',
  }),
  dedupMaxBytes: setting({
    doc: 'Hard cap on the bytes of answers kept to repeat to retransmissions (most answers, a bare 2.01 or 2.04, take none; a diagnostic or a read\'s 2.05 is kept as the datagram that carried it). One source address (IPv6: its /64) may hold a sixteenth of it; beyond that its answers are not kept, so its retransmitted GETs are handled again and other retransmissions go unanswered (logged once). Beyond the cap the oldest are forgotten early (logged once).',
    format: integer(1_048_576, 1_073_741_824),
    default: 33_554_432,
    env: 'COAP2MQTT_COAP_DEDUP_MAX_BYTES',
  }),
  maxBlockTransfers: setting({
    doc: 'How many Block1 uploads may be in progress at once; the least recently active is abandoned beyond it.',
    format: integer(1, 100_000),
    default: 500,
    env: 'COAP2MQTT_COAP_MAX_BLOCK_TRANSFERS',
  }),
  blockTransferIdleMs: setting({
    doc: 'A Block1 upload with no new block for this long is abandoned.',
    format: integer(1000, 3_600_000),
    default: 120_000,
    env: 'COAP2MQTT_COAP_BLOCK_TRANSFER_IDLE_MS',
  }),
  socketBufferBytes: setting({
    doc: 'Requested UDP socket send/receive buffer size (the kernel caps it at net.core.rmem_max / wmem_max).',
    format: integer(65_536, 268_435_456),
    default: 4_194_304,
    env: 'COAP2MQTT_COAP_SOCKET_BUFFER_BYTES',
  }),
  maxBlockSize: setting({
    doc: 'Largest Block2 block the gateway sends (RFC 7959). Responses and notifications longer than this go out block by block; a device may ask for smaller blocks itself. Use 256 or less on 6LoWPAN links.',
    format: BLOCK_SIZE,
    default: 1024,
    env: 'COAP2MQTT_COAP_MAX_BLOCK_SIZE',
  }),
  observeCheckIntervalMs: setting({
    doc: 'At least this often each observation gets a confirmable notification (the current state when nothing else happened), so an observer that vanished is found and dropped (RFC 7641 §4.5).',
    format: integer(10_000, 86_400_000),
    default: 300_000,
    env: 'COAP2MQTT_COAP_OBSERVE_CHECK_INTERVAL_MS',
  }),
  maxObservations: setting({
    doc: 'Most Observe relations held at once (two per device at most: attributes and RPC). Beyond it registrations are answered without Observe.',
    format: integer(1, 10_000_000),
    default: 100_000,
    env: 'COAP2MQTT_COAP_MAX_OBSERVATIONS',
  }),
};

export type CoapConfig = ConfigOf<typeof coap>;
