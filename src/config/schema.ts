// Every configuration key, with its meaning, format, default and environment variable: one file per
// section under sections/, gathered here in the order the reference and `check-config` show them.
// docs/configuration.md is generated from nothing else (npm run docs:config), and the configuration's
// TypeScript types are read off it (ConfigOf), so keep the docs there complete and plain.
import { settingsOf, type ConfigOf, type Setting } from './setting.js';
import { coap } from './sections/coap.js';
import { devices, devicesFile } from './sections/devices.js';
import { dtls } from './sections/dtls.js';
import { firmware } from './sections/firmware.js';
import { deviceHttp, http } from './sections/http.js';
import { limits } from './sections/limits.js';
import { log } from './sections/log.js';
import { mqttDevices } from './sections/mqtt-devices.js';
import { outbox } from './sections/outbox.js';
import { provision } from './sections/provision.js';
import { sessions } from './sections/sessions.js';
import { state } from './sections/state.js';
import { thethings } from './sections/thethings.js';
import { embeddedBroker, upstream } from './sections/upstream.js';

export { FIRMWARE_SOURCE_NAMES, formatComplaint, LOG_COMPONENTS, LOG_LEVELS } from './formats.js';

export const schema = {
  coap,
  dtls,
  limits,
  upstream,
  outbox,
  sessions,
  embeddedBroker,
  http,
  thethings,
  deviceHttp,
  mqttDevices,
  provision,
  firmware,
  devices,
  devicesFile,
  state,
  log,
};

export type ConfigSchema = typeof schema;

/** The configuration as convict returns it, before the checks type the lists (devices, keys, things). */
export type RawConfig = ConfigOf<ConfigSchema>;

/** Every setting by its dotted key ("coap.port"), in schema order. */
export const SETTINGS: ReadonlyMap<string, Setting<unknown>> = new Map(settingsOf(schema).map(({ key, setting }) => [key, setting]));
