// Loading and checking the configuration: defaults, then the file (JSON or JSON5), then COAP2MQTT_*
// environment variables. Every problem is reported with the key, the offending value and what is expected,
// all at once, so a technician can fix the file in one go.
import { accessSync, constants, readFileSync } from 'node:fs';
import convict from 'convict';
import JSON5 from 'json5';
import { redactUrl } from '../log.js';
import { schema, type LOG_LEVELS } from './schema.js';

export interface DeviceEntry {
  readonly name: string;
  readonly type: string;
  readonly token: string;
}

export interface CoapConfig {
  readonly host: string;
  readonly port: number;
  readonly maxPayloadBytes: number;
  readonly piggybackWindowMs: number;
  readonly dedupMaxEntries: number;
  readonly maxBlockTransfers: number;
  readonly blockTransferIdleMs: number;
  readonly socketBufferBytes: number;
  readonly maxBlockSize: number;
  readonly observeCheckIntervalMs: number;
  readonly maxObservations: number;
}

export interface SessionsConfig {
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
}

export interface GatewayConfig {
  readonly coap: CoapConfig;
  readonly upstream: UpstreamConfig;
  readonly sessions: SessionsConfig;
  readonly embeddedBroker: { readonly host: string; readonly port: number };
  readonly devices: readonly DeviceEntry[];
  readonly state: { readonly dir: string };
  readonly log: { readonly level: (typeof LOG_LEVELS)[number] };
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
  | { readonly ok: false; readonly errors: readonly string[] };

export interface LoadOptions {
  /** Path of the config file; undefined: defaults and environment only. */
  readonly file?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
}

/** The device the embedded mode registers when none is configured, so the README's first reading works. */
export const DEMO_DEVICE: DeviceEntry = { name: 'demo-sensor', type: 'default', token: 'demo-token' };

const DEVICE_FIELDS = ['name', 'type', 'token'];
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export function loadConfig(options: LoadOptions = {}): LoadResult {
  const env = options.env ?? process.env;
  const config = convict(schema as convict.Schema<Record<string, unknown>>, { env, args: [] });
  const warnings: string[] = [];
  const errors: string[] = [];
  const envNames = collectEnvNames(schema);
  const sensitive = collectSensitive(schema);

  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
      return { ok: false, errors: [`cannot read config file ${options.file}: ${why}`] };
    }
    let parsed: unknown;
    try {
      parsed = JSON5.parse(text);
    } catch (error) {
      const { lineNumber, columnNumber, message } = error as SyntaxError & { lineNumber?: number; columnNumber?: number };
      const where = lineNumber !== undefined ? `line ${lineNumber}, column ${columnNumber}: ` : '';
      return {
        ok: false,
        errors: [`config file ${options.file} is not valid JSON5: ${where}${message.replace(/^JSON5: /, '')}`],
      };
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return { ok: false, errors: [`config file ${options.file} must hold one object, e.g. { coap: { port: 5683 } }`] };
    }
    config.load(parsed);
  }

  try {
    config.validate({
      allowed: 'warn',
      output: (message: string) => {
        for (const line of message.replace(/^\S*Warning:\S*\s*/, '').split('\n')) {
          const key = /configuration param '([^']+)'/.exec(line)?.[1];
          if (key) warnings.push(unknownKeyWarning(key, [...envNames.keys()]));
        }
      },
    });
  } catch (error) {
    for (const line of (error as Error).message.split('\n')) {
      errors.push(describeConvictError(line, config, envNames, sensitive));
    }
  }
  if (errors.length > 0) return { ok: false, errors };

  const raw = config.getProperties() as unknown as GatewayConfig;
  const devices = checkDevices(raw.devices as unknown[], errors, warnings);
  checkUpstream(raw, errors, warnings);
  if (errors.length > 0) return { ok: false, errors };

  const notices: string[] = [];
  let effectiveDevices = devices;
  if (raw.upstream.url === '' && devices.length === 0) {
    effectiveDevices = [DEMO_DEVICE];
    notices.push(
      `no devices configured: registered the demo device "${DEMO_DEVICE.name}" (token as in the README), which exists only while the embedded broker is used`,
    );
  }
  return {
    ok: true,
    warnings,
    notices,
    config: {
      ...raw,
      devices: effectiveDevices,
    },
  };
}

function checkDevices(list: unknown[], errors: string[], warnings: string[]): DeviceEntry[] {
  const devices: DeviceEntry[] = [];
  const byName = new Map<string, number>();
  const byToken = new Map<string, number>();
  list.forEach((entry, index) => {
    const at = `devices[${index}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
      errors.push(`${at}: must be an object like {"name": "Boiler-7", "type": "thermostat", "token": "..."}`);
      return;
    }
    const record = entry as Record<string, unknown>;
    const label = typeof record.name === 'string' && record.name !== '' ? ` ("${record.name}")` : '';
    for (const field of Object.keys(record)) {
      if (!DEVICE_FIELDS.includes(field)) warnings.push(`${at}.${field}${label}: unknown field, ignored (known: ${DEVICE_FIELDS.join(', ')})`);
    }
    const { name, token } = record;
    const type = record.type ?? 'default';
    let valid = true;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 255) {
      errors.push(`${at}.name: must be the device name as ThingsBoard shows it, 1 to 255 characters (got ${JSON.stringify(name)})`);
      valid = false;
    } else if (byName.has(name)) {
      errors.push(`${at}.name: "${name}" is also the name of devices[${byName.get(name)}]; names must be unique`);
      valid = false;
    } else {
      byName.set(name, index);
    }
    if (typeof type !== 'string' || type.trim() === '' || type.length > 255) {
      errors.push(`${at}.type${label}: must be a device profile name, 1 to 255 characters (got ${JSON.stringify(type)})`);
      valid = false;
    }
    // Tokens are never echoed back, not even in errors: config errors end up in logs and support tickets.
    if (typeof token !== 'string' || token === '') {
      errors.push(`${at}.token${label}: must be a non-empty string (the access token the device puts in its CoAP path)`);
      valid = false;
    } else if (/[\s/?#]/.test(token) || token.length > 255) {
      errors.push(`${at}.token${label}: must not contain spaces, "/", "?" or "#" and be at most 255 characters, as it is one segment of a CoAP path`);
      valid = false;
    } else if (byToken.has(token)) {
      errors.push(`${at}.token${label}: same token as devices[${byToken.get(token)}]; every device needs its own token`);
      valid = false;
    } else {
      byToken.set(token, index);
    }
    if (valid) devices.push({ name: name as string, type: type as string, token: token as string });
  });
  return devices;
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
      try {
        accessSync(path, constants.R_OK);
      } catch {
        errors.push(`upstream.${key}: cannot read file "${path}"`);
      }
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

function describeConvictError(
  line: string,
  config: convict.Config<Record<string, unknown>>,
  envNames: Map<string, string>,
  sensitive: Set<string>,
): string {
  const match = /^([\w.]+): (.*?)(?:: value was .*)?$/.exec(line);
  if (!match) return line;
  const [, key, message] = match as unknown as [string, string, string];
  let shown: string;
  if (sensitive.has(key)) shown = '(hidden)';
  else {
    try {
      shown = JSON.stringify(config.get(key));
    } catch {
      shown = '(unreadable)';
    }
  }
  const env = envNames.get(key);
  const cleaned = message.replace(/^\s*should be of type/, 'must be of type').replace(/must be one of the possible values/, 'must be one of');
  return `${key}: ${cleaned} (got ${shown}${env ? `; also settable with ${env}` : ''})`;
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
  const guess = known
    .map((candidate) => ({ candidate, distance: editDistance(key.toLowerCase(), candidate.toLowerCase()) }))
    .sort((a, b) => a.distance - b.distance)[0];
  const hint = guess && guess.distance <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${guess.candidate}?)` : '';
  return `${key}: unknown key, ignored${hint}`;
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
