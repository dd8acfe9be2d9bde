// The formats configuration values must have, registered with convict, each with the type of its values
// (for the schema's compile-time checks) and a plain description (for docs/configuration.md).
import { isIP } from 'node:net';
import convict from 'convict';
import { typedFormat, type Format } from './setting.js';
import { dropPrototypeKeys, fitsShape, isPlainObject, MAX_DEPTH, SETTING_NAME, showValue, tooDeep } from './shape.js';

const registered = new Set<string>();

/** Our formats' checks by name, to explain a value convict is never handed (see shape.ts). */
const formatChecks = new Map<string, (value: unknown) => void>();
/** Our formats' descriptions by name, for the configuration reference. */
const descriptions = new Map<string, string>();

function addFormat(format: { name: string; describe: string; validate: (value: unknown) => void; coerce?: (value: unknown) => unknown }): void {
  const { describe, ...convictFormat } = format;
  convict.addFormat(convictFormat);
  formatChecks.set(format.name, format.validate);
  descriptions.set(format.name, describe);
}

/** What a setting's format accepts, in a technician's words. */
export function describeFormat(format: unknown): string {
  if (Array.isArray(format)) return `one of ${format.map((value) => JSON.stringify(value)).join(', ')}`;
  if (format === String) return 'text';
  if (format === 'port') return 'a port number from 0 to 65535';
  return (typeof format === 'string' && descriptions.get(format)) || String(format);
}

/** A format that accepts exactly these values (convict checks membership). */
export function oneOf<const V extends readonly string[]>(values: V): Format<V[number]> {
  return typedFormat<V[number]>([...values]);
}

export const TEXT = typedFormat<string>(String);
export const PORT = typedFormat<number>('port');

/** What a setting's format says about `value`, in convict's words (convict-errors.ts rewords them for technicians). */
export function formatComplaint(format: unknown, value: unknown): string {
  if (Array.isArray(format)) return `must be one of the possible values: ${JSON.stringify(format)}`;
  if (format === String || format === 'string') return 'must be of type String';
  if (format === 'port') return 'ports must be within range 0 - 65535';
  try {
    if (typeof format === 'string') formatChecks.get(format)?.(value);
  } catch (error) {
    return (error as Error).message;
  }
  return 'has the wrong type';
}

/** A convict format for integers in [min, max]; env strings are coerced like convict's own 'int'. */
export function integer(min: number, max: number): Format<number> {
  const name = `integer ${min}..${max}`;
  if (!registered.has(name)) {
    registered.add(name);
    addFormat({
      name,
      describe: `a whole number from ${min} to ${max}`,
      coerce: (value: unknown) => (typeof value === 'string' && value.trim() !== '' ? Number(value) : value),
      validate: (value: unknown) => {
        if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
          throw new Error(`must be a whole number from ${min} to ${max}`);
        }
      },
    });
  }
  return typedFormat<number>(name);
}

/** A format for "empty, or a URL with one of these schemes and a host"; `expected` ends the error message. */
function urlFormat(name: string, protocols: readonly string[], expected: string): Format<string> {
  addFormat({
    name,
    describe: expected,
    validate: (value: unknown) => {
      if (value === '') return;
      let url: URL | undefined;
      try {
        url = new URL(String(value));
      } catch {
        url = undefined;
      }
      if (typeof value !== 'string' || !url || !protocols.includes(url.protocol) || url.hostname === '') {
        throw new Error(`must be ${expected}`);
      }
    },
  });
  return typedFormat<string>(name);
}

export const MQTT_URL = urlFormat('mqtt-url', ['mqtt:', 'mqtts:'], 'empty (use the embedded broker) or an mqtt:// or mqtts:// URL, e.g. "mqtts://thingsboard.example.com:8883"');
export const HTTP_URL = urlFormat('http-url', ['http:', 'https:'], 'empty or an http:// or https:// URL, e.g. "https://thingsboard.example.com"');

/**
 * Environment variables carry lists and objects as JSON. Parsed only when the result is what convict can
 * take whole (see shape.ts) and not absurdly deep; otherwise the string stays, for the format to explain.
 */
function jsonWhen(fits: (parsed: unknown) => boolean): (value: unknown) => unknown {
  return (value) => {
    const parsed = jsonOf(value);
    if (parsed === value || tooDeep(parsed) !== undefined) return value;
    // convict's copies would make "__proto__" keys prototypes (see dropPrototypeKeys).
    dropPrototypeKeys(parsed);
    return fits(parsed) ? parsed : value;
  };
}

/** The JSON a string holds, or the value itself. */
function jsonOf(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    // No reviver: JSON.parse walks a reviver recursively, which a 20,000-deep list overflows.
    return JSON.parse(value) as unknown;
  } catch {
    return value;
  }
}

const DEEP = `must not be nested more than ${MAX_DEPTH} levels deep`;

/** A list of objects, like devices, with an example of one entry for the error message. */
function objectList(name: string, example: string): Format<readonly unknown[]> {
  addFormat({
    name,
    describe: `a list, e.g. [${example}]`,
    coerce: jsonWhen(Array.isArray),
    validate: (value: unknown) => {
      if (Array.isArray(value)) return;
      throw new Error(Array.isArray(jsonOf(value)) ? DEEP : `must be a JSON array, e.g. [${example}]`);
    },
  });
  return typedFormat<readonly unknown[]>(name);
}

export const DEVICE_LIST = objectList('device-list', '{"name":"Boiler-7","type":"thermostat","token":"..."}');
export const PROVISION_KEY_LIST = objectList('provision-key-list', '{"key":"...","secret":"...","type":"thermostat"}');
export const THING_LIST = objectList('thing-list', '{"thingToken":"...","device":"Boiler-7","activationCode":"..."}');

// Stricter than convict's Boolean, which takes any string ("no" included) as true.
export const BOOLEAN = typedFormat<boolean>('boolean');
addFormat({
  name: 'boolean',
  describe: 'true or false',
  coerce: (value: unknown) => (value === 'true' ? true : value === 'false' ? false : value),
  validate: (value: unknown) => {
    if (typeof value !== 'boolean') throw new Error('must be true or false');
  },
});

export const NON_EMPTY_STRING = typedFormat<string>('non-empty-string');
addFormat({
  name: 'non-empty-string',
  describe: 'non-empty text',
  validate: (value: unknown) => {
    if (typeof value !== 'string' || value.trim() === '') throw new Error('must be a non-empty string');
  },
});

// An address to listen on or connect to: anything else fails only at start (a bind error, exit 1 and a
// restart every 10 s). Host names as RFC 1123 allows them, at most 253 characters.
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;
export const HOST = typedFormat<string>('host');
addFormat({
  name: 'host',
  describe: 'an IP address or a host name',
  validate: (value: unknown) => {
    if (typeof value !== 'string' || (isIP(value) === 0 && !HOST_NAME.test(value))) throw new Error('must be an IP address or a host name');
  },
});

export const BLOCK_SIZE = typedFormat<number>('block-size');
addFormat({
  name: 'block-size',
  describe: 'one of the RFC 7959 block sizes 16, 32, 64, 128, 256, 512 or 1024',
  coerce: (value: unknown) => (typeof value === 'string' && value.trim() !== '' ? Number(value) : value),
  validate: (value: unknown) => {
    if (![16, 32, 64, 128, 256, 512, 1024].includes(value as number)) {
      throw new Error('must be one of the RFC 7959 block sizes 16, 32, 64, 128, 256, 512 or 1024');
    }
  },
});

/** Where firmware images may come from, in the order firmware.sources tries them. */
export const FIRMWARE_SOURCE_NAMES = ['dir', 'url', 'thingsboard'] as const;
export type FirmwareSource = (typeof FIRMWARE_SOURCE_NAMES)[number];

export const FIRMWARE_SOURCES = typedFormat<readonly FirmwareSource[]>('firmware-sources');
addFormat({
  name: 'firmware-sources',
  describe: `a list of ${FIRMWARE_SOURCE_NAMES.map((name) => `"${name}"`).join(', ')}, each at most once`,
  // COAP2MQTT_FIRMWARE_SOURCES carries the list as JSON.
  coerce: jsonWhen(Array.isArray),
  validate: (value: unknown) => {
    if (!Array.isArray(value) || value.some((item) => !(FIRMWARE_SOURCE_NAMES as readonly unknown[]).includes(item))) {
      if (!Array.isArray(value) && Array.isArray(jsonOf(value))) throw new Error(DEEP);
      throw new Error(`must be a list of ${FIRMWARE_SOURCE_NAMES.map((name) => `"${name}"`).join(', ')}, e.g. ["dir", "url", "thingsboard"]`);
    }
    if (new Set(value).size !== value.length) throw new Error('must name each source once');
  },
});

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Every logger the gateway hands out names one of these (log.components). */
export const LOG_COMPONENTS = [
  'coap',
  'udp',
  'dtls',
  'thingsboard-api',
  'bridge',
  'presence',
  'outbox',
  'upstream',
  'embedded-broker',
  'attribute-cache',
  'limits',
  'http',
  'systemd',
  'reload',
  'provision',
  'firmware',
  'device-http',
  'mqtt-devices',
  'thethings',
] as const;

export const LOG_LEVEL_MAP = typedFormat<Readonly<Record<string, LogLevel>>>('log-levels');
addFormat({
  name: 'log-levels',
  describe: 'an object of component → level, e.g. {"dtls": "debug"}',
  // COAP2MQTT_LOG_COMPONENTS carries the object as JSON.
  coerce: jsonWhen((parsed) => fitsShape({}, parsed)),
  validate: (value: unknown) => {
    // A string here is JSON that was not taken: say what is wrong inside it.
    const levels = jsonOf(value);
    if (!isPlainObject(levels)) {
      throw new Error('must be an object of component → level, e.g. {"dtls": "debug", "upstream": "warn"}');
    }
    if (tooDeep(levels) !== undefined) throw new Error(DEEP);
    for (const [component, level] of Object.entries(levels)) {
      if (!SETTING_NAME.test(component)) throw new Error(`${showValue(component)} is not a component name; components: ${LOG_COMPONENTS.join(', ')}`);
      if (!(LOG_LEVELS as readonly unknown[]).includes(level)) {
        throw new Error(`"${component}": ${showValue(level)} is not a level; use one of ${LOG_LEVELS.join(', ')}`);
      }
    }
  },
});
