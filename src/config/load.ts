// Loading and checking the configuration: defaults, then the file (JSON or JSON5), then COAP2MQTT_*
// environment variables. Every problem is reported with the key, the offending value and what is expected,
// all at once, so a technician can fix the file in one go. The keys and their types are the schema's
// (schema.ts); the checks between keys live with their sections (sections/*.ts).
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import convict from 'convict';
import JSON5 from 'json5';
import { describeConvictError } from './convict-errors.js';
import { duplicateKeys } from './duplicate-keys.js';
import { formatComplaint, LOG_COMPONENTS } from './formats.js';
import { migrateEnv, migrateObject, renameWarning } from './migrations.js';
import { describeFsError, notAFile } from './paths.js';
import { schema, SETTINGS, type RawConfig } from './schema.js';
import { checkDevices, DEMO_DEVICE, readDevicesFile, type DeviceEntry } from './sections/devices.js';
import { checkDtls } from './sections/dtls.js';
import { checkMqttDevices } from './sections/mqtt-devices.js';
import { checkFirmware } from './sections/firmware.js';
import { checkProvision, type ProvisionConfig } from './sections/provision.js';
import { checkThings, type ThethingsConfig } from './sections/thethings.js';
import { checkUpstream } from './sections/upstream.js';
import { checkShape, describeSyntaxError, dropPrototypeKeys, isPlainObject, MAX_DEPTH, shorten, tooDeep } from './shape.js';
import { unknownKeyWarning, unknownKeyWarnings } from './unknown-keys.js';

export type { LogLevel } from './formats.js';
export type { CoapConfig } from './sections/coap.js';
export { DEMO_DEVICE, readDevicesFile, type DeviceEntry } from './sections/devices.js';
export type { DtlsConfig } from './sections/dtls.js';
export type { FirmwareConfig } from './sections/firmware.js';
export type { DeviceHttpConfig, HttpConfig } from './sections/http.js';
export type { MqttDevicesConfig } from './sections/mqtt-devices.js';
export type { LimitsConfig } from './sections/limits.js';
export type { LogConfig } from './sections/log.js';
export type { OutboxConfig } from './sections/outbox.js';
export type { ProvisionConfig, ProvisionKey } from './sections/provision.js';
export type { SessionsConfig } from './sections/sessions.js';
export type { ThethingsConfig, ThingEntry } from './sections/thethings.js';
export type { EmbeddedBrokerConfig, UpstreamConfig } from './sections/upstream.js';

/** The checked configuration: the schema's values, with the lists typed by the checks. */
export type GatewayConfig = Omit<RawConfig, 'devices' | 'provision' | 'thethings'> & {
  /** The configured list and the devices file's, together. */
  readonly devices: readonly DeviceEntry[];
  readonly provision: ProvisionConfig;
  readonly thethings: ThethingsConfig;
};

export type LoadResult =
  | {
      readonly ok: true;
      readonly config: GatewayConfig;
      /** Things that are allowed but probably not meant (unknown keys, ignored fields). */
      readonly warnings: readonly string[];
      /** Facts worth one log line at start-up, e.g. that a demo device was added. */
      readonly notices: readonly string[];
    }
  | { readonly ok: false; readonly errors: readonly string[]; readonly warnings?: readonly string[] };

export interface LoadOptions {
  /** Path of the config file; undefined: defaults and environment only. */
  readonly file?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  /** The devices file's list as it would be after an edit, instead of what is on disk (devices add/remove). */
  readonly devicesFileContent?: unknown[];
}

/**
 * A configuration file is a few KiB; JSON5 parses ~1 MB/s on a Pi-class CPU, so a runaway file (a log
 * written over it, a 100 MB string) is refused at once instead of stalling the start.
 */
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const KNOWN_KEYS = [...SETTINGS.keys()];

export function loadConfig(options: LoadOptions = {}): LoadResult {
  const warnings: string[] = [];
  const errors: string[] = [];
  const { env, warnings: envWarnings } = migrateEnv(options.env ?? process.env);
  warnings.push(...envWarnings);
  const config = convict<RawConfig>(schema, { env, args: [] });
  let fileValues: Record<string, unknown> = {};

  if (options.file !== undefined) {
    const read = readFileValues(options.file, warnings);
    if ('problem' in read) return { ok: false, errors: [read.problem] };
    fileValues = read.values;
    const shaped = checkShape(fileValues, schema, (key, value) => formatComplaint(SETTINGS.get(key)?.format, value));
    for (const { key, message } of shaped.errors) {
      // As before: a file value that an environment variable overrides is never used, nor checked.
      const envName = SETTINGS.get(key)?.env;
      if (!envName || env[envName] === undefined) errors.push(`${key}: ${message}`);
    }
    warnings.push(...unknownKeyWarnings(shaped.unknownKeys, KNOWN_KEYS));
    // Each known setting whole: convict's load() would walk into object values (see shape.ts).
    for (const { key, value } of shaped.settings) config.set(key, value);
    // Environment variables win over the file: load() imports them again, after the sets.
    config.load({});
  }

  try {
    config.validate({
      allowed: 'warn',
      // Unknown keys never reach convict now (see checkShape); kept so that one slipping through warns.
      output: (message: string) => {
        for (const line of message.replace(/^\S*Warning:\S*\s*/, '').split('\n')) {
          const key = /configuration param '([^']+)'/.exec(line)?.[1];
          if (key) warnings.push(unknownKeyWarning(key, KNOWN_KEYS));
        }
      },
    });
  } catch (error) {
    errors.push(...(error as Error).message.split('\n'));
  }
  if (errors.length > 0) return { ok: false, errors: errors.map((line) => describeConvictError(line, { env, file: fileValues })), warnings };
  return checkAcrossKeys(config.getProperties(), options, warnings);
}

/** The checks convict cannot make: list entries, and settings that must agree with each other. */
function checkAcrossKeys(raw: RawConfig, options: LoadOptions, warnings: string[]): LoadResult {
  const errors: string[] = [];
  const devicesFile = resolve(options.file === undefined ? '.' : dirname(options.file), raw.devicesFile);
  const fromFile = options.devicesFileContent ?? readDevicesFile(devicesFile, errors);
  const inline = raw.devices;
  const devices = checkDevices([...inline, ...fromFile], errors, warnings, (index) =>
    index < inline.length ? `devices[${index}]` : `${devicesFile}[${index - inline.length}]`,
  );
  for (const component of Object.keys(raw.log.components)) {
    if (!(LOG_COMPONENTS as readonly string[]).includes(component)) {
      warnings.push(`log.components.${component}: no such component, ignored (components: ${LOG_COMPONENTS.join(', ')})`);
    }
  }
  checkUpstream(raw, errors, warnings);
  checkMqttDevices(raw, errors);
  const provisionKeys = checkProvision(raw, errors, warnings);
  checkFirmware(raw, warnings);
  const notices: string[] = [];
  let effectiveDevices = devices;
  if (raw.upstream.url === '' && devices.length === 0 && errors.length === 0) {
    effectiveDevices = [DEMO_DEVICE];
    notices.push(
      `no devices configured: registered the demo device "${DEMO_DEVICE.name}" (token and PSK as in the README), which exists only while the embedded broker is used`,
    );
  }
  checkDtls(raw, effectiveDevices, errors, warnings);
  const things = checkThings(raw, effectiveDevices, errors, warnings);
  if (errors.length > 0) return { ok: false, errors, warnings };
  return {
    ok: true,
    warnings,
    notices,
    config: {
      ...raw,
      devices: effectiveDevices,
      devicesFile,
      provision: { ...raw.provision, keys: provisionKeys },
      thethings: { ...raw.thethings, things },
    },
  };
}

/** The config file parsed, its "__proto__" keys dropped and old key names moved; or the one problem that stops it. */
function readFileValues(file: string, warnings: string[]): { values: Record<string, unknown> } | { problem: string } {
  const read = readConfigFile(file);
  if (typeof read !== 'string') return { problem: `cannot read config file ${file}: ${read.problem}` };
  let parsed: unknown;
  try {
    parsed = JSON5.parse(read);
  } catch (error) {
    return { problem: `config file ${file} is not valid JSON5: ${describeSyntaxError(error)}` };
  }
  if (!isPlainObject(parsed)) return { problem: `config file ${file} must hold one object, e.g. { coap: { port: 5683 } }` };
  // Before anything walks it recursively (structuredClone in the migration, error messages).
  const deep = tooDeep(parsed);
  if (deep !== undefined) {
    return { problem: `${deep}: nested more than ${MAX_DEPTH} levels deep; no setting goes deeper than 4 (devices[].psk.identity)` };
  }
  for (const key of dropPrototypeKeys(parsed)) warnings.push(`${shorten(key)}: ignored; "__proto__" cannot be a key`);
  for (const { key, line } of duplicateKeys(read)) warnings.push(`${shorten(key)}: given twice in the file; only the last one (line ${line}) counts`);
  const migrated = migrateObject(parsed);
  for (const applied of migrated.applied) warnings.push(renameWarning(applied, file));
  return { values: migrated.value };
}

/** The config file's text, or why it cannot be read: a FIFO or a device would block or never end. */
function readConfigFile(path: string): string | { problem: string } {
  try {
    const stats = statSync(path);
    const notReadable = notAFile(path, stats);
    if (notReadable) return { problem: `it is ${notReadable}` };
    if (stats.size > MAX_CONFIG_BYTES) {
      return { problem: `${stats.size} bytes, more than a configuration may have (${MAX_CONFIG_BYTES}); long device lists belong in devicesFile` };
    }
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? 'no such file' : describeFsError(error) };
  }
}
