// Loading and checking the configuration: defaults, then the file (JSON or JSON5), then COAP2MQTT_*
// environment variables. Every problem is reported with the key, the offending value and what is expected,
// all at once, so a technician can fix the file in one go.
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import convict from 'convict';
import JSON5 from 'json5';
import { redactUrl } from '../log.js';
import { duplicateKeys } from './duplicate-keys.js';
import { migrateEnv, migrateObject, renameWarning } from './migrations.js';
import { describeFsError, notAFile, readableFileProblem } from './paths.js';
import { formatComplaint, LOG_COMPONENTS, schema, type LOG_LEVELS } from './schema.js';
import { checkShape, dropPrototypeKeys, isPlainObject, isSetting, MAX_DEPTH, shorten, showValue, tooDeep } from './shape.js';

export interface DeviceEntry {
  readonly name: string;
  readonly type: string;
  /** Absent for devices that only ever authenticate over DTLS. */
  readonly token: string | undefined;
  readonly psk: { readonly identity: string; readonly key: Buffer } | undefined;
  /** A pinned certificate (SHA-256, lowercase hex) or a CA-verified certificate's subject CN. */
  readonly cert: { readonly fingerprint256: string } | { readonly cn: string } | undefined;
}

export interface DtlsConfig {
  readonly enabled: boolean;
  readonly port: number;
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly requireClientCert: boolean;
  readonly ciphers: string;
  readonly securityLevel: number;
  readonly mtu: number;
  readonly handshakeTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxSessions: number;
  readonly maxHandshakes: number;
  readonly maxHandshakesPerAddress: number;
  readonly sessionTickets: boolean;
}

export interface CoapConfig {
  readonly host: string;
  readonly port: number;
  readonly maxRequestBodyBytes: number;
  readonly piggybackWindowMs: number;
  readonly dedupMaxEntries: number;
  readonly dedupMaxBytes: number;
  readonly maxBlockTransfers: number;
  readonly blockTransferIdleMs: number;
  readonly socketBufferBytes: number;
  readonly maxBlockSize: number;
  readonly observeCheckIntervalMs: number;
  readonly maxObservations: number;
}

/** Device-facing protection: 4.29 rate limits and the unknown-token block (0 turns a limit off). */
export interface LimitsConfig {
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly deviceRequestsPerSecond: number;
  readonly deviceBurst: number;
  readonly unknownTokenFailures: number;
  readonly unknownTokenWindowMs: number;
  readonly unknownTokenBlockMs: number;
}

export interface SessionsConfig {
  readonly persist: boolean;
  readonly attributeRequestTimeoutMs: number;
  readonly clientRpcTimeoutMs: number;
  readonly rpcQueueTtlMs: number;
  readonly rpcQueueMax: number;
  readonly idleTimeoutMs: number;
  readonly keepAliveIntervalMs: number;
}

export interface UpstreamConfig {
  /** Empty: the embedded broker. */
  readonly url: string;
  readonly accessToken: string;
  readonly username: string;
  readonly password: string;
  readonly clientId: string;
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly keepaliveSeconds: number;
  readonly connectTimeoutMs: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly publishTimeoutMs: number;
  readonly maxInflight: number;
  readonly maxQueuedPublishes: number;
  readonly maxMessageBytes: number;
  readonly maxDownlinkBytes: number;
  readonly maxDownlinkDepth: number;
  readonly sessionLimitsTimeoutMs: number;
}

export interface OutboxConfig {
  readonly enabled: boolean;
  readonly mode: 'spill' | 'always';
  readonly spillAfterMs: number;
  readonly maxBytes: number;
  readonly maxAgeHours: number;
  readonly minFreeDiskBytes: number;
  readonly synchronous: 'full' | 'normal';
  readonly shutdownFlushMs: number;
}

/** A provision key/secret pair for provision.mode "local", and the profile of the devices it creates. */
export interface ProvisionKey {
  readonly key: string;
  readonly secret: string;
  readonly type: string;
}

export interface ProvisionConfig {
  readonly mode: 'upstream' | 'local' | 'off';
  readonly keys: readonly ProvisionKey[];
  readonly deviceType: string;
  readonly namePrefix: string;
  readonly timeoutMs: number;
  readonly maxConcurrent: number;
}

export interface FirmwareConfig {
  readonly sources: readonly ('dir' | 'url' | 'thingsboard')[];
  readonly dir: string;
  readonly thingsboardUrl: string;
  /** Empty: <state.dir>/firmware. */
  readonly cacheDir: string;
  readonly cacheMaxBytes: number;
  readonly maxImageBytes: number;
  readonly fetchTimeoutMs: number;
  readonly requireChecksum: boolean;
}

export interface ThingEntry {
  readonly thingToken: string;
  readonly device: string;
  readonly activationCode: string | undefined;
}

export interface ThethingsConfig {
  readonly enabled: boolean;
  readonly things: readonly ThingEntry[];
  readonly provisionKey: string;
  readonly provisionSecret: string;
  readonly valuesPerKey: number;
  readonly maxSeries: number;
}

export interface DeviceHttpConfig {
  readonly enabled: boolean;
  readonly host: string;
  readonly port: number;
  readonly maxBodyBytes: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerAddress: number;
}

export interface GatewayConfig {
  readonly coap: CoapConfig;
  readonly dtls: DtlsConfig;
  readonly limits: LimitsConfig;
  readonly upstream: UpstreamConfig;
  readonly sessions: SessionsConfig;
  readonly outbox: OutboxConfig;
  readonly embeddedBroker: { readonly host: string; readonly port: number };
  readonly http: { readonly enabled: boolean; readonly host: string; readonly port: number };
  readonly provision: ProvisionConfig;
  readonly firmware: FirmwareConfig;
  readonly deviceHttp: DeviceHttpConfig;
  readonly thethings: ThethingsConfig;
  /** The configured list and the devices file's, together. */
  readonly devices: readonly DeviceEntry[];
  /** Absolute path of the devices file (it may not exist). */
  readonly devicesFile: string;
  readonly state: { readonly dir: string };
  readonly log: LogConfig;
}

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LogConfig {
  readonly level: LogLevel;
  readonly components: Readonly<Record<string, LogLevel>>;
  readonly pretty: 'auto' | 'always' | 'never';
}

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
 * The device the embedded mode registers when none is configured, so the README's first readings work,
 * over plain CoAP with its token and over DTLS with its PSK.
 */
export const DEMO_DEVICE: DeviceEntry = {
  name: 'demo-sensor',
  type: 'default',
  token: 'demo-token',
  psk: { identity: 'demo-sensor', key: Buffer.from('demo-key') },
  cert: undefined,
};

// `provisioned` records how a device came (provisioning writes it); the gateway itself only reads it there.
const DEVICE_FIELDS = ['name', 'type', 'token', 'psk', 'cert', 'provisioned'];
const PSK_EXAMPLE = '{"identity": "boiler-7", "key": "..."} or {"identity": "boiler-7", "keyHex": "00112233..."}';
const CERT_EXAMPLE = '{"fingerprint256": "AB:CD:..."} or {"cn": "boiler-7"}';
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/**
 * A configuration file is a few KiB; JSON5 parses ~1 MB/s on a Pi-class CPU, so a runaway file (a log
 * written over it, a 100 MB string) is refused at once instead of stalling the start.
 */
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
/** Unknown keys named one by one; beyond that, a count (each is a line at every start). */
const MAX_UNKNOWN_KEYS_SHOWN = 20;

export function loadConfig(options: LoadOptions = {}): LoadResult {
  const warnings: string[] = [];
  const errors: string[] = [];
  const { env, warnings: envWarnings } = migrateEnv(options.env ?? process.env);
  warnings.push(...envWarnings);
  const config = convict(schema as convict.Schema<Record<string, unknown>>, { env, args: [] });
  const envNames = collectEnvNames(schema);
  const sensitive = collectSensitive(schema);
  let fileValues: Record<string, unknown> = {};

  if (options.file !== undefined) {
    const read = readConfigFile(options.file);
    if (typeof read !== 'string') return { ok: false, errors: [`cannot read config file ${options.file}: ${read.problem}`] };
    let parsed: unknown;
    try {
      parsed = JSON5.parse(read);
    } catch (error) {
      return {
        ok: false,
        errors: [`config file ${options.file} is not valid JSON5: ${describeSyntaxError(error)}`],
      };
    }
    if (!isPlainObject(parsed)) {
      return { ok: false, errors: [`config file ${options.file} must hold one object, e.g. { coap: { port: 5683 } }`] };
    }
    // Before anything walks it recursively (structuredClone in the migration, error messages).
    const deep = tooDeep(parsed);
    if (deep !== undefined) {
      return { ok: false, errors: [`${deep}: nested more than ${MAX_DEPTH} levels deep; no setting goes deeper than 4 (devices[].psk.identity)`] };
    }
    for (const key of dropPrototypeKeys(parsed)) warnings.push(`${shorten(key)}: ignored; "__proto__" cannot be a key`);
    for (const { key, line } of duplicateKeys(read)) warnings.push(`${shorten(key)}: given twice in the file; only the last one (line ${line}) counts`);
    const migrated = migrateObject(parsed);
    for (const applied of migrated.applied) warnings.push(renameWarning(applied, options.file));
    fileValues = migrated.value;
    const shaped = checkShape(fileValues, schema, (key, value) => formatComplaint(settingAt(key)?.format, value));
    for (const { key, message } of shaped.errors) {
      // As before: a file value that an environment variable overrides is never used, nor checked.
      const envName = envNames.get(key);
      if (!envName || env[envName] === undefined) errors.push(`${key}: ${message}`);
    }
    warnings.push(...unknownKeyWarnings(shaped.unknownKeys, [...envNames.keys()]));
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
          if (key) warnings.push(unknownKeyWarning(key, [...envNames.keys()]));
        }
      },
    });
  } catch (error) {
    errors.push(...(error as Error).message.split('\n'));
  }
  if (errors.length > 0) return { ok: false, errors: errors.map((line) => describeConvictError(line, { env, file: fileValues }, envNames, sensitive)), warnings };

  const raw = config.getProperties() as unknown as GatewayConfig;
  const devicesFile = resolve(options.file === undefined ? '.' : dirname(options.file), raw.devicesFile);
  const fromFile = options.devicesFileContent ?? readDevicesFile(devicesFile, errors);
  const inline = raw.devices as unknown[];
  const devices = checkDevices([...inline, ...fromFile], errors, warnings, (index) =>
    index < inline.length ? `devices[${index}]` : `${devicesFile}[${index - inline.length}]`,
  );
  for (const component of Object.keys(raw.log.components)) {
    if (!(LOG_COMPONENTS as readonly string[]).includes(component)) {
      warnings.push(`log.components.${component}: no such component, ignored (components: ${LOG_COMPONENTS.join(', ')})`);
    }
  }
  checkUpstream(raw, errors, warnings);
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

function unknownKeyWarnings(keys: readonly string[], known: string[]): string[] {
  const shown = keys.slice(0, MAX_UNKNOWN_KEYS_SHOWN).map((key) => unknownKeyWarning(key, known));
  const more = keys.length - shown.length;
  return more > 0 ? [...shown, `${more} more unknown keys, ignored`] : shown;
}

function checkThings(config: GatewayConfig, devices: readonly DeviceEntry[], errors: string[], warnings: string[]): ThingEntry[] {
  const { enabled, provisionKey, provisionSecret } = config.thethings;
  const list = config.thethings.things as unknown[];
  const things: ThingEntry[] = [];
  const tokens = new Set<string>();
  const codes = new Set<string>();
  list.forEach((entry, index) => {
    const at = `thethings.things[${index}]`;
    const record = entry !== null && typeof entry === 'object' && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const { thingToken, device, activationCode } = record ?? {};
    if (!record || typeof thingToken !== 'string' || thingToken === '' || typeof device !== 'string' || device === '') {
      errors.push(`${at}: must be an object like {"thingToken": "...", "device": "Boiler-7", "activationCode": "..."} with a non-empty thingToken and device`);
      return;
    }
    if (activationCode !== undefined && (typeof activationCode !== 'string' || activationCode === '')) {
      errors.push(`${at}.activationCode: must be a non-empty string when given`);
      return;
    }
    if (tokens.has(thingToken)) errors.push(`${at}.thingToken: the same thing token appears twice`);
    if (activationCode !== undefined && codes.has(activationCode)) errors.push(`${at}.activationCode: the same activation code appears twice`);
    tokens.add(thingToken);
    if (activationCode !== undefined) codes.add(activationCode);
    if (!devices.some((known) => known.name === device)) warnings.push(`${at}.device: ${showValue(device)} is not in devices; its thing token is refused until it is`);
    for (const field of Object.keys(record)) {
      if (!['thingToken', 'device', 'activationCode'].includes(field)) warnings.push(`${at}.${shorten(field)}: unknown field, ignored (known: thingToken, device, activationCode)`);
    }
    things.push({ thingToken, device, activationCode });
  });
  if ((provisionKey === '') !== (provisionSecret === '')) {
    errors.push('thethings.provisionKey / thethings.provisionSecret: set both (activation by provisioning) or neither');
  }
  if (!enabled && (things.length > 0 || provisionKey !== '')) warnings.push('thethings.things: only used when thethings.enabled is true');
  return things;
}

/** "line 3, column 7: invalid character ..." from JSON5's parse error. */
function describeSyntaxError(error: unknown): string {
  const { lineNumber, columnNumber, message } = error as SyntaxError & { lineNumber?: number; columnNumber?: number };
  const where = lineNumber !== undefined ? `line ${lineNumber}, column ${columnNumber}: ` : '';
  return `${where}${message.replace(/^JSON5: /, '')}`;
}

/**
 * The devices file: a JSON array of entries like those in `devices`. Missing is fine (no devices from it);
 * unreadable or malformed is an error naming the file, since starting without those devices would refuse them.
 */
export function readDevicesFile(path: string, errors: string[]): unknown[] {
  let text: string;
  try {
    const notReadable = notAFile(path, statSync(path));
    if (notReadable) {
      errors.push(`devicesFile: ${path} is ${notReadable}; it must be a JSON file of devices`);
      return [];
    }
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    errors.push(`devicesFile: cannot read ${path}: ${describeFsError(error)}`);
    return [];
  }
  if (text.trim() === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON5.parse(text);
  } catch (error) {
    errors.push(`devicesFile: ${path} is not valid JSON: ${describeSyntaxError(error)}`);
    return [];
  }
  if (!Array.isArray(parsed)) {
    errors.push(`devicesFile: ${path} must hold a JSON array of devices, e.g. [{"name": "Boiler-7", "type": "thermostat", "token": "..."}]`);
    return [];
  }
  const deep = tooDeep(parsed);
  if (deep !== undefined) {
    errors.push(`devicesFile: ${path} is nested more than ${MAX_DEPTH} levels deep, at ${deep}; a device entry is at most 3 deep`);
    return [];
  }
  return parsed;
}

function checkDevices(list: unknown[], errors: string[], warnings: string[], where: (index: number) => string): DeviceEntry[] {
  const devices: DeviceEntry[] = [];
  const byName = new Map<string, number>();
  const byToken = new Map<string, number>();
  const byIdentity = new Map<string, number>();
  const byCert = new Map<string, number>();
  list.forEach((entry, index) => {
    const at = where(index);
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      errors.push(`${at}: must be an object like {"name": "Boiler-7", "type": "thermostat", "token": "..."}`);
      return;
    }
    const record = entry as Record<string, unknown>;
    const label = typeof record.name === 'string' && record.name !== '' ? ` (${showValue(record.name)})` : '';
    for (const field of Object.keys(record)) {
      if (!DEVICE_FIELDS.includes(field)) warnings.push(`${at}.${shorten(field)}${label}: unknown field, ignored (known: ${DEVICE_FIELDS.join(', ')})`);
    }
    const { name, token } = record;
    const type = record.type ?? 'default';
    let valid = true;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 255) {
      errors.push(`${at}.name: must be the device name as ThingsBoard shows it, 1 to 255 characters (got ${showValue(name)})`);
      valid = false;
    } else if (byName.has(name)) {
      errors.push(`${at}.name: ${showValue(name)} is also the name of ${where(byName.get(name)!)}; names must be unique`);
      valid = false;
    } else {
      byName.set(name, index);
    }
    if (typeof type !== 'string' || type.trim() === '' || type.length > 255) {
      errors.push(`${at}.type${label}: must be a device profile name, 1 to 255 characters (got ${showValue(type)})`);
      valid = false;
    }
    // Tokens and keys are never echoed back, not even in errors: config errors end up in logs and support tickets.
    const psk = record.psk === undefined ? undefined : checkPsk(record.psk, `${at}.psk`, label, errors, warnings);
    const cert = record.cert === undefined ? undefined : checkCert(record.cert, `${at}.cert`, label, errors);
    if ((record.psk !== undefined && !psk) || (record.cert !== undefined && !cert)) valid = false;
    if (token === undefined && record.psk === undefined && record.cert === undefined) {
      errors.push(`${at}.token${label}: missing; a device needs a token (for its CoAP path), or a psk or cert to authenticate over DTLS`);
      valid = false;
    } else if (token !== undefined && (typeof token !== 'string' || token === '')) {
      errors.push(`${at}.token${label}: must be a non-empty string (the access token the device puts in its CoAP path)`);
      valid = false;
    } else if (typeof token === 'string' && (/[\s/?#]/.test(token) || token.length > 255)) {
      errors.push(`${at}.token${label}: must not contain spaces, "/", "?" or "#" and be at most 255 characters, as it is one segment of a CoAP path`);
      valid = false;
    } else if (typeof token === 'string' && byToken.has(token)) {
      errors.push(`${at}.token${label}: same token as ${where(byToken.get(token)!)}; every device needs its own token`);
      valid = false;
    } else if (typeof token === 'string') {
      byToken.set(token, index);
    }
    for (const [seen, value, what] of [
      [byIdentity, psk?.identity, 'psk.identity'],
      [byCert, cert && ('cn' in cert ? `cn ${cert.cn}` : `fingerprint ${cert.fingerprint256}`), 'cert'],
    ] as const) {
      if (value === undefined) continue;
      if (seen.has(value)) {
        errors.push(`${at}.${what}${label}: same as ${where(seen.get(value)!)}; every device needs its own`);
        valid = false;
      } else seen.set(value, index);
    }
    if (valid) devices.push({ name: name as string, type: type as string, token: token as string | undefined, psk, cert });
  });
  return devices;
}

function checkPsk(value: unknown, at: string, label: string, errors: string[], warnings: string[]): DeviceEntry['psk'] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    errors.push(`${at}${label}: must be an object like ${PSK_EXAMPLE}`);
    return undefined;
  }
  const { identity, key, keyHex } = value as Record<string, unknown>;
  if (typeof identity !== 'string' || identity === '' || Buffer.byteLength(identity) > 128) {
    errors.push(`${at}.identity${label}: must be the PSK identity the device sends, 1 to 128 bytes (got ${showValue(identity)})`);
    return undefined;
  }
  let bytes: Buffer | undefined;
  if (key !== undefined && keyHex !== undefined) errors.push(`${at}${label}: give either key (text) or keyHex, not both`);
  else if (typeof key === 'string' && key !== '') bytes = Buffer.from(key, 'utf8');
  else if (typeof keyHex === 'string' && /^([0-9a-fA-F]{2})+$/.test(keyHex.replace(/[:\s]/g, ''))) bytes = Buffer.from(keyHex.replace(/[:\s]/g, ''), 'hex');
  else if (keyHex !== undefined) errors.push(`${at}.keyHex${label}: must be an even number of hex digits, e.g. "00112233445566778899aabbccddeeff"`);
  else errors.push(`${at}.key${label}: missing; the pre-shared key as text (as coap-client -k takes it), or keyHex for a binary key`);
  if (!bytes) return undefined;
  if (bytes.length > 64) {
    errors.push(`${at}.key${label}: at most 64 bytes (got ${bytes.length})`);
    return undefined;
  }
  if (bytes.length < 16) {
    warnings.push(`${at}.key${label}: only ${bytes.length} bytes; use at least 16 random bytes, e.g. keyHex from "openssl rand -hex 16"`);
  }
  return { identity, key: bytes };
}

function checkCert(value: unknown, at: string, label: string, errors: string[]): DeviceEntry['cert'] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    errors.push(`${at}${label}: must be an object like ${CERT_EXAMPLE}`);
    return undefined;
  }
  const { fingerprint256, cn } = value as Record<string, unknown>;
  if ((fingerprint256 === undefined) === (cn === undefined)) {
    errors.push(`${at}${label}: give exactly one of fingerprint256 (a pinned certificate) or cn (a certificate signed by dtls.ca), like ${CERT_EXAMPLE}`);
    return undefined;
  }
  if (cn !== undefined) {
    if (typeof cn === 'string' && cn.trim() !== '') return { cn };
    errors.push(`${at}.cn${label}: must be the certificate subject's common name (got ${showValue(cn)})`);
    return undefined;
  }
  const hex = typeof fingerprint256 === 'string' ? fingerprint256.replace(/[:\s]/g, '').toLowerCase() : '';
  if (/^[0-9a-f]{64}$/.test(hex)) return { fingerprint256: hex };
  errors.push(
    `${at}.fingerprint256${label}: must be the certificate's SHA-256 fingerprint, 64 hex digits with or without colons, as "openssl x509 -in device.pem -noout -fingerprint -sha256" prints it (got ${showValue(fingerprint256)})`,
  );
  return undefined;
}

function checkDtls(config: GatewayConfig, devices: readonly DeviceEntry[], errors: string[], warnings: string[]): void {
  const { dtls, coap } = config;
  const pskDevices = devices.filter((device) => device.psk);
  const certDevices = devices.map((device, index) => ({ device, index })).filter(({ device }) => device.cert);
  if (!dtls.enabled) {
    // The demo device has a PSK for the README's DTLS example; that is not worth a warning.
    if (pskDevices.length + certDevices.length > 0 && devices[0] !== DEMO_DEVICE) {
      warnings.push('devices: some devices have a psk or cert, which are used only over DTLS, but dtls.enabled is false');
    }
    return;
  }
  if (dtls.port !== 0 && dtls.port === coap.port) errors.push(`dtls.port: must differ from coap.port (both are ${dtls.port})`);
  if (dtls.maxHandshakesPerAddress > dtls.maxHandshakes) {
    warnings.push(
      `dtls.maxHandshakesPerAddress (${dtls.maxHandshakesPerAddress}) is above dtls.maxHandshakes (${dtls.maxHandshakes}): one address can take every handshake place; keep it well below`,
    );
  }
  for (const key of ['cert', 'key', 'ca'] as const) {
    const path = dtls[key];
    if (path === '') continue;
    const problem = readableFileProblem(path);
    if (problem) errors.push(`dtls.${key}: ${problem}`);
  }
  if ((dtls.cert === '') !== (dtls.key === '')) {
    errors.push('dtls.cert / dtls.key: the gateway\'s certificate needs both the certificate file and its private key file');
  }
  if (dtls.cert === '') {
    if (certDevices.length > 0) {
      errors.push(`device "${certDevices[0]!.device.name}" cert: certificate devices need the gateway's own certificate; set dtls.cert and dtls.key`);
    }
    if (dtls.requireClientCert) errors.push('dtls.requireClientCert: needs dtls.cert and dtls.key (client certificates are only asked for in certificate suites)');
    if (pskDevices.length === 0 && certDevices.length === 0) {
      errors.push('dtls.enabled: nothing to authenticate with; give devices a psk, or set dtls.cert and dtls.key');
    }
  }
  const byCn = certDevices.find(({ device }) => device.cert && 'cn' in device.cert);
  if (byCn && dtls.ca === '') {
    errors.push(
      `device "${byCn.device.name}" cert.cn: a certificate is matched by its CN only when it chains to dtls.ca; set dtls.ca, or pin the certificate with cert.fingerprint256`,
    );
  }
  if (dtls.idleTimeoutMs > 0 && dtls.idleTimeoutMs <= coap.observeCheckIntervalMs) {
    warnings.push(
      `dtls.idleTimeoutMs: ${dtls.idleTimeoutMs} is not above coap.observeCheckIntervalMs (${coap.observeCheckIntervalMs}), so sessions of observing devices that otherwise stay quiet will be closed between checks`,
    );
  }
}

/** provision.keys as typed pairs; secrets are never echoed back, not even in errors. */
function checkProvision(config: GatewayConfig, errors: string[], warnings: string[]): ProvisionKey[] {
  const { mode } = config.provision;
  const list = config.provision.keys as unknown[];
  const keys: ProvisionKey[] = [];
  const seen = new Set<string>();
  list.forEach((entry, index) => {
    const at = `provision.keys[${index}]`;
    const record = entry !== null && typeof entry === 'object' && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const { key, secret, type = 'default' } = record ?? {};
    if (!record || typeof key !== 'string' || key === '' || typeof secret !== 'string' || secret === '') {
      errors.push(`${at}: must be an object like {"key": "...", "secret": "...", "type": "thermostat"} with a non-empty key and secret`);
      return;
    }
    if (typeof type !== 'string' || type.trim() === '') {
      errors.push(`${at}.type: must be a device profile name (got ${showValue(type)})`);
      return;
    }
    if (seen.has(key)) {
      errors.push(`${at}.key: the same provision key appears twice; each key has one secret`);
      return;
    }
    seen.add(key);
    for (const field of Object.keys(record)) {
      if (!['key', 'secret', 'type'].includes(field)) warnings.push(`${at}.${shorten(field)}: unknown field, ignored (known: key, secret, type)`);
    }
    keys.push({ key, secret, type });
  });
  if (mode === 'local' && list.length === 0) {
    errors.push('provision.keys: provision.mode is "local" but no keys are configured; add [{"key": "...", "secret": "..."}] or set provision.mode "upstream" or "off"');
  }
  if (mode !== 'local' && list.length > 0) warnings.push(`provision.keys: only used when provision.mode is "local" (it is "${mode}")`);
  return keys;
}

function checkFirmware(config: GatewayConfig, warnings: string[]): void {
  // An empty firmware.thingsboardUrl is not warned about: most sites serve no packages, and a package
  // that no source can give is answered (and logged) with what to set.
  const { dir } = config.firmware;
  if (dir !== '') {
    try {
      accessSync(dir, constants.R_OK | constants.X_OK);
    } catch {
      warnings.push(`firmware.dir: cannot read directory "${dir}"; the "dir" firmware source finds nothing there`);
    }
  }
}

function checkUpstream(config: GatewayConfig, errors: string[], warnings: string[]): void {
  const { upstream, embeddedBroker } = config;
  if (upstream.url === '') {
    if (!LOOPBACK.test(embeddedBroker.host)) {
      errors.push(
        `embeddedBroker.host: must be a loopback address such as 127.0.0.1 or ::1, because the embedded broker has no authentication (got "${embeddedBroker.host}")`,
      );
    }
  } else {
    const tls = upstream.url.startsWith('mqtts:');
    if (upstream.accessToken !== '' && upstream.username !== '') {
      errors.push('upstream.username: set either upstream.accessToken (access-token credentials) or upstream.username/password (MQTT Basic), not both');
    }
    if (upstream.accessToken === '' && upstream.username === '' && upstream.cert === '') {
      warnings.push('upstream.accessToken: empty, and no MQTT Basic or X.509 credentials either; ThingsBoard will refuse the connection');
    }
    for (const key of ['ca', 'cert', 'key'] as const) {
      const path = upstream[key];
      if (path === '') continue;
      if (!tls) errors.push(`upstream.${key}: only used with mqtts://, but upstream.url is "${redactUrl(upstream.url)}"`);
      const problem = readableFileProblem(path);
      if (problem) errors.push(`upstream.${key}: ${problem}`);
    }
    if ((upstream.cert === '') !== (upstream.key === '')) {
      errors.push('upstream.cert / upstream.key: an X.509 client certificate needs both the certificate and its private key');
    }
  }
  if (upstream.reconnectMinMs > upstream.reconnectMaxMs) {
    errors.push(
      `upstream.reconnectMinMs: must not exceed upstream.reconnectMaxMs (got ${upstream.reconnectMinMs} > ${upstream.reconnectMaxMs})`,
    );
  }
}

/**
 * convict's message for one key, reworded for a technician: the key, what is expected with an example
 * (the default), and the value as written in the file or environment — never a secret's.
 */
function describeConvictError(
  line: string,
  sources: { readonly env: NodeJS.ProcessEnv; readonly file: Record<string, unknown> },
  envNames: Map<string, string>,
  sensitive: Set<string>,
): string {
  const match = /^([\w.]+): (.*?)(?:: value was .*)?$/.exec(line);
  if (!match) return line;
  const [, key, message] = match as unknown as [string, string, string];
  const envName = envNames.get(key);
  const fromEnv = envName ? sources.env[envName] : undefined;
  let shown: string;
  if (sensitive.has(key)) shown = fromEnv === undefined ? '(hidden)' : `(hidden) from ${envName}`;
  else if (fromEnv !== undefined) shown = `${showValue(fromEnv)} from ${envName}`;
  else shown = showValue(valueAt(sources.file, key));
  const expected = message
    .replace(/^\s*should be of type/, 'must be of type')
    .replace(/^ports must be within range 0 - 65535/, 'must be a port number from 0 to 65535')
    .replace(/must be one of the possible values: (.*)$/, (_all, list: string) => `must be one of ${list.replace(/^\[|\]$/g, '').split(',').join(', ')}`)
    .replace(/must be one of: \[(.*)\]$/, (_all, list: string) => `must be one of ${list.split(',').join(', ')}`);
  const fallback = defaultOf(key);
  const example = /e\.g\./.test(expected) || fallback === undefined || fallback === '' ? '' : `, e.g. ${JSON.stringify(fallback)}`;
  const alsoEnv = envName && fromEnv === undefined ? `; also settable with ${envName}` : '';
  return `${key}: ${expected}${example} (got ${shown}${alsoEnv})`;
}

function valueAt(tree: Record<string, unknown>, key: string): unknown {
  let node: unknown = tree;
  for (const segment of key.split('.')) {
    // Own keys only: "constructor" must not find Object.prototype's.
    if (!isPlainObject(node) || !Object.hasOwn(node, segment)) return undefined;
    node = node[segment];
  }
  return node;
}

/** The schema's setting at a dotted key, if there is one there. */
function settingAt(key: string): { format?: unknown; default?: unknown } | undefined {
  const node = valueAt(schema as unknown as Record<string, unknown>, key);
  return isPlainObject(node) && isSetting(node) ? node : undefined;
}

function defaultOf(key: string): unknown {
  const value = settingAt(key)?.default;
  return Array.isArray(value) || (value !== null && typeof value === 'object' && Object.keys(value).length === 0) ? undefined : value;
}

type SchemaNode = { [key: string]: unknown };

function isLeaf(node: SchemaNode): boolean {
  return 'default' in node && 'doc' in node;
}

function collectEnvNames(node: SchemaNode, prefix = '', into = new Map<string, string>()): Map<string, string> {
  for (const [key, child] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const childNode = child as SchemaNode;
    if (isLeaf(childNode)) into.set(path, String(childNode.env ?? ''));
    else collectEnvNames(childNode, path, into);
  }
  return into;
}

function collectSensitive(node: SchemaNode, prefix = '', into = new Set<string>()): Set<string> {
  for (const [key, child] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const childNode = child as SchemaNode;
    if (isLeaf(childNode)) {
      if (childNode.sensitive === true) into.add(path);
    } else collectSensitive(childNode, path, into);
  }
  return into;
}

function unknownKeyWarning(key: string, known: string[]): string {
  // A guess is worth it for typos, not for a 100,000-character key (edit distance is quadratic).
  const guess =
    key.length > 64
      ? undefined
      : known
          .map((candidate) => ({ candidate, distance: editDistance(key.toLowerCase(), candidate.toLowerCase()) }))
          .sort((a, b) => a.distance - b.distance)[0];
  const hint = guess && guess.distance <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${guess.candidate}?)` : '';
  return `${shorten(key)}: unknown key, ignored${hint}`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
