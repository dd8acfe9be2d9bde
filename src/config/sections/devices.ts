// The device list, inline and in the devices file, checked into typed entries: names, tokens, PSKs,
// certificates, each unique.
import { readFileSync, statSync } from 'node:fs';
import JSON5 from 'json5';
import { DEVICE_LIST, NON_EMPTY_STRING } from '../formats.js';
import { describeFsError, notAFile } from '../paths.js';
import { setting } from '../setting.js';
import { describeSyntaxError, MAX_DEPTH, shorten, showValue, tooDeep } from '../shape.js';

export const devices = setting({
  doc: 'The devices allowed to send, as [{"name": "Boiler-7", "type": "thermostat", "token": "..."}]. name is the device name in ThingsBoard, type its device profile (used when ThingsBoard creates the device; default "default"), token the access token the device puts in its CoAP path. Over DTLS a device may instead be identified by "psk": {"identity": "...", "key": "..."} ("keyHex" for binary keys) or "cert": {"fingerprint256": "..."} or {"cn": "..."}; it then uses token-less paths such as /api/v1/telemetry.',
  format: DEVICE_LIST,
  default: [],
  env: 'COAP2MQTT_DEVICES',
  // Holds tokens and PSKs: a malformed list is reported without its content.
  sensitive: true,
});

export const devicesFile = setting({
  doc: 'JSON file with more devices, in the same form as devices; what "coap2mqtt devices add/remove" edits (atomically, keeping its permissions) and the gateway re-reads on SIGHUP (systemctl reload coap2mqtt). A relative path is relative to the configuration file\'s directory. A missing file means no devices from it.',
  format: NON_EMPTY_STRING,
  default: 'devices.json',
  env: 'COAP2MQTT_DEVICES_FILE',
});

export interface DeviceEntry {
  readonly name: string;
  readonly type: string;
  /** Absent for devices that only ever authenticate over DTLS. */
  readonly token: string | undefined;
  readonly psk: { readonly identity: string; readonly key: Buffer } | undefined;
  /** A pinned certificate (SHA-256, lowercase hex) or a CA-verified certificate's subject CN. */
  readonly cert: { readonly fingerprint256: string } | { readonly cn: string } | undefined;
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

export function checkDevices(list: readonly unknown[], errors: string[], warnings: string[], where: (index: number) => string): DeviceEntry[] {
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
