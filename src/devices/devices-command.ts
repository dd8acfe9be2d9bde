// `coap2mqtt devices list|add|remove`: the device list as a technician edits it. Only the devices file
// (devicesFile) is written — the technician's commented config file is never rewritten — atomically and
// keeping its owner and mode; the result is validated with the gateway's own loader before it is written,
// and a running gateway is told to reload it.
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Output } from '../config/check-config.js';
import { DEMO_DEVICE, loadConfig, type DeviceEntry, type GatewayConfig } from '../config/load.js';
import { fingerprint } from '../log.js';
import { reloadRunningGateway } from '../ops/running-gateway.js';
import { entryName, readDevicesFileEntries, writeDevicesFile } from './devices-file.js';

export const DEVICES_USAGE = `Usage:
  coap2mqtt devices list [--json]
  coap2mqtt devices add NAME [--type PROFILE] [--token TOKEN | --psk-identity ID [--psk-key TEXT | --psk-key-hex HEX]
                             | --cert-fingerprint SHA256 | --cert-cn CN] [--no-reload]
  coap2mqtt devices remove NAME [--no-reload]

add without credentials generates a random token (printed once); --psk-identity without a key generates a
16-byte key. The devices file (devicesFile) is rewritten atomically, and a running gateway reloads it.`;

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean' },
  type: { type: 'string' },
  token: { type: 'string' },
  'psk-identity': { type: 'string' },
  'psk-key': { type: 'string' },
  'psk-key-hex': { type: 'string' },
  'cert-fingerprint': { type: 'string' },
  'cert-cn': { type: 'string' },
  'no-reload': { type: 'boolean' },
} as const;

interface Context {
  readonly file: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly output: Output;
}

/** Exit status: 0 done, 1 not done (no such device, cannot write), 2 invalid usage or resulting config. */
export async function runDevicesCommand(argv: readonly string[], env: NodeJS.ProcessEnv, output: Output): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], allowPositionals: true, options: OPTIONS, strict: true });
  } catch (error) {
    output.err(`coap2mqtt devices: ${(error as Error).message}\n\n${DEVICES_USAGE}`);
    return 2;
  }
  const [action, name, ...rest] = parsed.positionals;
  const context: Context = { file: parsed.values.config ?? (env.COAP2MQTT_CONFIG || undefined), env, output };
  const loaded = loadConfig({ file: context.file, env });
  if (!loaded.ok) {
    output.err(`coap2mqtt devices: the configuration has errors; fix them first (coap2mqtt check-config):`);
    for (const line of loaded.errors) output.err(`  - ${line}`);
    return 2;
  }
  const config = loaded.config;
  if (action === 'list' && name === undefined) return list(config, context, parsed.values.json === true);
  if ((action === 'add' || action === 'remove') && name !== undefined && rest.length === 0) {
    const reload = parsed.values['no-reload'] !== true;
    if (action === 'remove') return remove(config, name, reload, context);
    const entry = newEntry(name, parsed.values, output);
    return entry ? add(config, entry, reload, context) : 2;
  }
  output.err(`coap2mqtt devices: ${action === undefined ? 'missing action' : `cannot understand "${parsed.positionals.join(' ')}"`}\n\n${DEVICES_USAGE}`);
  return 2;
}

function list(config: GatewayConfig, { output }: Context, json: boolean): number {
  const fromFile = new Set(fileEntries(config.devicesFile).map((entry) => entryName(entry)));
  const rows = config.devices.map((device) => ({
    name: device.name,
    type: device.type,
    credentials: describeCredentials(device),
    source: device === DEMO_DEVICE ? 'built-in demo (embedded broker only)' : fromFile.has(device.name) ? 'devices file' : 'config',
  }));
  if (json) {
    output.out(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (rows.length === 0) {
    output.out(`no devices (devices file: ${config.devicesFile})`);
    return 0;
  }
  const widths = (['name', 'type', 'credentials'] as const).map((key) => Math.max(key.length, ...rows.map((row) => row[key].length)));
  const line = (cells: readonly string[]): string => cells.map((cell, i) => (i < widths.length ? cell.padEnd(widths[i]!) : cell)).join('  ');
  output.out(line(['NAME', 'TYPE', 'CREDENTIALS', 'FROM']));
  for (const row of rows) output.out(line([row.name, row.type, row.credentials, row.source]));
  output.out(`${rows.length} device(s); devices file: ${config.devicesFile}`);
  return 0;
}

/** Never the secret itself: the token's fingerprint, as the gateway's log lines show it. */
function describeCredentials(device: DeviceEntry): string {
  const parts: string[] = [];
  if (device.token !== undefined) parts.push(`token sha256:${fingerprint(device.token)}`);
  if (device.psk) parts.push(`psk ${device.psk.identity}`);
  if (device.cert) parts.push('cn' in device.cert ? `cert cn=${device.cert.cn}` : `cert sha256:${device.cert.fingerprint256.slice(0, 16)}…`);
  return parts.join(', ');
}

type Values = { readonly [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

/** The entry as it is written to the devices file; secrets the technician did not give are generated. */
function newEntry(name: string, values: Values, output: Output): { entry: Record<string, unknown>; generated: string[] } | undefined {
  const entry: Record<string, unknown> = { name, type: values.type ?? 'default' };
  const generated: string[] = [];
  const identity = values['psk-identity'];
  const hasCert = values['cert-fingerprint'] !== undefined || values['cert-cn'] !== undefined;
  if (values['cert-fingerprint'] !== undefined && values['cert-cn'] !== undefined) {
    output.err('coap2mqtt devices add: give either --cert-fingerprint or --cert-cn, not both');
    return undefined;
  }
  if ((values['psk-key'] !== undefined || values['psk-key-hex'] !== undefined) && identity === undefined) {
    output.err('coap2mqtt devices add: a PSK key needs --psk-identity (what the device sends as its identity)');
    return undefined;
  }
  if (values.token !== undefined) entry.token = values.token;
  if (identity !== undefined) {
    if (values['psk-key'] !== undefined) entry.psk = { identity, key: values['psk-key'] };
    else if (values['psk-key-hex'] !== undefined) entry.psk = { identity, keyHex: values['psk-key-hex'] };
    else {
      const keyHex = randomBytes(16).toString('hex');
      entry.psk = { identity, keyHex };
      generated.push(`PSK identity ${identity}, key (hex) ${keyHex}  — e.g. coap-client-openssl -u ${identity} -k <the key as bytes>`);
    }
  }
  if (values['cert-fingerprint'] !== undefined) entry.cert = { fingerprint256: values['cert-fingerprint'] };
  if (values['cert-cn'] !== undefined) entry.cert = { cn: values['cert-cn'] };
  if (entry.token === undefined && identity === undefined && !hasCert) {
    const token = randomBytes(15).toString('base64url');
    entry.token = token;
    generated.push(`token ${token}  — the device sends to coap://<gateway>/api/v1/${token}/telemetry`);
  }
  return { entry, generated };
}

async function add(config: GatewayConfig, { entry, generated }: { entry: Record<string, unknown>; generated: string[] }, reload: boolean, context: Context): Promise<number> {
  const current = fileEntries(config.devicesFile);
  const next = [...current, entry];
  if (!validate(next, context)) return 2;
  if (!write(config.devicesFile, next, context)) return 1;
  context.output.out(`added "${String(entry.name)}" (type ${String(entry.type)}) to ${config.devicesFile}`);
  for (const line of generated) context.output.out(`  generated ${line}`);
  if (generated.length > 0) context.output.out('  (shown only now; the gateway never logs it)');
  return reload ? tellGateway(config, context) : 0;
}

async function remove(config: GatewayConfig, name: string, reload: boolean, context: Context): Promise<number> {
  const current = fileEntries(config.devicesFile);
  const next = current.filter((entry) => entryName(entry) !== name);
  if (next.length === current.length) {
    const inConfig = config.devices.some((device) => device.name === name);
    context.output.err(
      inConfig
        ? `coap2mqtt devices remove: "${name}" is listed in the configuration file's devices, not in ${config.devicesFile}; remove it there (then systemctl reload coap2mqtt)`
        : `coap2mqtt devices remove: no device named "${name}"${suggest(name, config.devices.map((device) => device.name))}`,
    );
    return 1;
  }
  if (!validate(next, context)) return 2;
  if (!write(config.devicesFile, next, context)) return 1;
  context.output.out(`removed "${name}" from ${config.devicesFile}`);
  return reload ? tellGateway(config, context) : 0;
}

/** The whole configuration as it would load with the new list: duplicates, DTLS needs and all. */
function validate(next: unknown[], { file, env, output }: Context): boolean {
  const result = loadConfig({ file, env, devicesFileContent: next });
  if (result.ok) return true;
  output.err('coap2mqtt devices: not changed, the device list would be invalid:');
  for (const line of result.errors) output.err(`  - ${line}`);
  return false;
}

function write(path: string, entries: unknown[], { output }: Context): boolean {
  try {
    const backup = writeDevicesFile(path, entries);
    if (backup !== undefined) output.out(`the previous ${path} is kept as ${backup}`);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? ' (run it as root: sudo coap2mqtt devices ...)' : '';
    output.err(`coap2mqtt devices: cannot write ${path}: ${(error as Error).message}${hint}; nothing changed`);
    return false;
  }
}

function fileEntries(path: string): unknown[] {
  try {
    return readDevicesFileEntries(path);
  } catch {
    // The loader has already refused a broken file, so an error here only means it vanished meanwhile.
    return [];
  }
}

async function tellGateway(config: GatewayConfig, { output }: Context): Promise<number> {
  const stateDir = resolve(config.state.dir);
  let reloaded;
  try {
    reloaded = await reloadRunningGateway(stateDir);
  } catch (error) {
    output.err(`could not signal the running gateway: ${(error as Error).message}; run: sudo systemctl reload coap2mqtt`);
    return 1;
  }
  if (!reloaded) {
    output.out('no running gateway found on this state directory; the change applies when it starts');
    return 0;
  }
  if (!reloaded.status) {
    output.out(`asked the running gateway (pid ${reloaded.pid}) to reload; it did not confirm within 5 s — see journalctl -u coap2mqtt`);
    return 0;
  }
  output.out(`the running gateway (pid ${reloaded.pid}) reloaded:`);
  for (const line of reloaded.status.lines) output.out(`  ${line}`);
  return reloaded.status.ok ? 0 : 1;
}

function suggest(name: string, names: readonly string[]): string {
  const lower = name.toLowerCase();
  const close = names.find((candidate) => candidate.toLowerCase() === lower || candidate.toLowerCase().includes(lower));
  return close ? ` (did you mean "${close}"?)` : '';
}
