// Log levels, overall and per component, and the line format.
import { LOG_LEVEL_MAP, LOG_LEVELS, oneOf } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const log = {
  level: setting({
    doc: 'Log level: fatal, error, warn, info, debug, trace or silent. info logs state changes only; debug logs every request.',
    format: oneOf(LOG_LEVELS),
    default: 'info',
    env: 'COAP2MQTT_LOG_LEVEL',
  }),
  components: setting({
    doc: 'Levels for single components, overriding log.level, e.g. {"dtls": "debug", "upstream": "warn"}. Components: coap, udp, dtls, thingsboard-api, bridge, presence, outbox, upstream, embedded-broker, attribute-cache, limits, http, systemd, reload, provision, firmware, device-http, mqtt-devices, thethings. Applied again on SIGHUP.',
    format: LOG_LEVEL_MAP,
    default: {},
    env: 'COAP2MQTT_LOG_COMPONENTS',
  }),
  pretty: setting({
    doc: 'Human-readable log lines instead of JSON: "auto" when stdout is a terminal (journald and files get JSON), "always" or "never".',
    format: oneOf(['auto', 'always', 'never']),
    default: 'auto',
    env: 'COAP2MQTT_LOG_PRETTY',
  }),
};

export type LogConfig = ConfigOf<typeof log>;
