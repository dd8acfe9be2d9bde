// Device-facing protection: 4.29 rate limits and the unknown-token block (0 turns a limit off).
import { integer } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const limits = {
  requestsPerSecond: setting({
    doc: 'Most new requests per second the gateway accepts from all devices together; beyond it they are answered 4.29 Too Many Requests with Max-Age (seconds until one would be accepted). Retransmissions, block-wise follow-ups and Observe deregistrations are never counted. 0: no gateway-wide limit. Set it somewhat below what the box sustains (npm run bench) to refuse cheaply rather than answer late.',
    format: integer(0, 1_000_000),
    default: 0,
    env: 'COAP2MQTT_LIMITS_REQUESTS_PER_SECOND',
  }),
  burst: setting({
    doc: 'How many new requests may arrive at once above limits.requestsPerSecond before the gateway-wide limit applies (token-bucket size). 0: one second\'s worth, the value of limits.requestsPerSecond.',
    format: integer(0, 10_000_000),
    default: 0,
    env: 'COAP2MQTT_LIMITS_BURST',
  }),
  deviceRequestsPerSecond: setting({
    doc: 'Most requests per second one device may make, whatever its address or transport; beyond it they are answered 4.29 Too Many Requests with Max-Age. A Block1 upload counts once; retransmissions, Block2 follow-ups and Observe deregistrations never. 0: no per-device limit.',
    format: integer(0, 100_000),
    default: 50,
    env: 'COAP2MQTT_LIMITS_DEVICE_REQUESTS_PER_SECOND',
  }),
  deviceBurst: setting({
    doc: 'How many requests one device may send back to back before limits.deviceRequestsPerSecond applies, e.g. a backlog of readings sent after a reconnection (token-bucket size).',
    format: integer(1, 1_000_000),
    default: 100,
    env: 'COAP2MQTT_LIMITS_DEVICE_BURST',
  }),
  unknownTokenFailures: setting({
    doc: 'An address (IPv6: its /64) that sends this many different unknown access tokens within limits.unknownTokenWindowMs is blocked for limits.unknownTokenBlockMs: its token requests, with a valid token too, are answered 4.29 with Max-Age, which stops token guessing. Repeating one wrong token counts once. Devices identified by DTLS are never blocked. Logged once per block. 0: never block.',
    format: integer(0, 1000),
    default: 20,
    env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_FAILURES',
  }),
  unknownTokenWindowMs: setting({
    doc: 'The window in which limits.unknownTokenFailures different unknown tokens get an address blocked; it starts at the first unknown token.',
    format: integer(1000, 86_400_000),
    default: 60_000,
    env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_WINDOW_MS',
  }),
  unknownTokenBlockMs: setting({
    doc: 'How long an address stays blocked after too many unknown tokens. Behind a NAT every device sharing the address is blocked with it, so keep it short enough for them to catch up.',
    format: integer(1000, 86_400_000),
    default: 300_000,
    env: 'COAP2MQTT_LIMITS_UNKNOWN_TOKEN_BLOCK_MS',
  }),
};

export type LimitsConfig = ConfigOf<typeof limits>;
