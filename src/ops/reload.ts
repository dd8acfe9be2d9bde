// The reload policy, all of it: SIGHUP (systemctl reload coap2mqtt, or coap2mqtt devices add/remove)
// reads the configuration again and applies what can change while running: the device list, the DTLS
// and MQTT TLS certificates, keys and CAs, and log levels. Any other changed key waits for a restart, and the report says
// so. A configuration with errors changes nothing: the gateway carries on with the one it has.
import type { Logger } from 'pino';
import type { Bridge } from '../bridge/index.js';
import type { DtlsTransport } from '../coap/dtls-transport.js';
import { atMost } from '../config/check-config.js';
import { loadConfig, type GatewayConfig } from '../config/load.js';
import type { DeviceEnrolment } from '../devices/enrolment.js';
import type { DeviceRegistry, RegistryChange } from '../devices/registry.js';
import { describeDtlsError, readDtlsMaterial, sameMaterial, type DtlsMaterial } from '../front-ends/coap/dtls-listener.js';
import type { ComponentLoggers } from '../log.js';
import { StartupError } from '../startup-error.js';
import { writeReloadStatus, type ReloadStatus } from './running-gateway.js';

export interface ReloadReport {
  readonly devices: RegistryChange;
  /** DTLS sessions closed because their device was removed or changed. */
  readonly dtlsSessionsClosed: number;
  /** 'reloaded' when the files changed and OpenSSL took them; otherwise why not. */
  readonly dtlsCredentials: 'reloaded' | 'unchanged' | 'off' | { readonly error: string };
  /** The same for MQTT over TLS (its files, or dtls.cert, key and ca they fall back to). */
  readonly mqttTlsCredentials: 'reloaded' | 'unchanged' | 'off' | { readonly error: string };
  /** Keys whose new value needs a restart to take effect. */
  readonly restartNeeded: readonly string[];
}

/** Keys a reload applies; any other changed key waits for a restart. */
const RELOADABLE_KEYS = new Set(['devices', 'devicesFile', 'dtls.cert', 'dtls.key', 'dtls.ca', 'mqttDevices.cert', 'mqttDevices.key', 'mqttDevices.ca', 'log.level']);

export interface ReloadTargets {
  readonly registry: DeviceRegistry;
  readonly enrolment: DeviceEnrolment;
  readonly bridge: Pick<Bridge, 'revokeDevices'>;
  readonly dtls: { readonly transport: DtlsTransport; readonly material: DtlsMaterial } | undefined;
  /** MQTT over TLS, when mqttDevices.tls: reads the new material from a configuration and applies it. */
  readonly mqttTls: ((next: GatewayConfig) => 'reloaded' | 'unchanged') | undefined;
  readonly logs: ComponentLoggers;
}

/**
 * Applies a new configuration without a restart. Devices that did not change keep their observations and
 * DTLS sessions; sessions of removed or changed devices close.
 */
export function createReloader(started: GatewayConfig, targets: ReloadTargets): (next: GatewayConfig) => ReloadReport {
  const { registry, enrolment, bridge, logs } = targets;
  let current = started;
  let dtlsMaterial = targets.dtls?.material;
  return (next) => {
    const devices = registry.replace(next.devices);
    // Provisioned devices whose write to the devices file is still pending are not dropped by a reload.
    enrolment.reapplyUnsaved();
    const revoked = new Set([...devices.removed, ...devices.changed]);
    bridge.revokeDevices([...revoked]);
    const server = targets.dtls?.transport.server;
    // A session authenticated as a device that is gone or changed ends; token-only sessions are checked per request.
    const dtlsSessionsClosed =
      server?.closeWhere((connection) => {
        if (connection.credential === undefined) return false;
        const device = registry.findByCredential(connection.credential);
        return device === undefined || revoked.has(device.name);
      }) ?? 0;
    let dtlsCredentials: ReloadReport['dtlsCredentials'] = 'off';
    if (server && dtlsMaterial) {
      try {
        // After registry.replace: certificate devices added by this reload count.
        const material = readDtlsMaterial(next.dtls, registry);
        if (sameMaterial(material, dtlsMaterial)) dtlsCredentials = 'unchanged';
        else {
          server.replaceCredentials(material);
          dtlsMaterial = material;
          dtlsCredentials = 'reloaded';
        }
      } catch (error) {
        dtlsCredentials = { error: error instanceof StartupError ? error.message : describeDtlsError(error as Error, next.dtls) };
      }
    }
    let mqttTlsCredentials: ReloadReport['mqttTlsCredentials'] = 'off';
    if (targets.mqttTls) {
      try {
        mqttTlsCredentials = targets.mqttTls(next);
      } catch (error) {
        mqttTlsCredentials = { error: (error as Error).message };
      }
    }
    logs.setLevels(next.log.level, next.log.components);
    const restartNeeded = changedKeys(current, next).filter((key) => !RELOADABLE_KEYS.has(key) && !key.startsWith('log.components.'));
    current = {
      ...current,
      devices: next.devices,
      dtls: { ...current.dtls, cert: next.dtls.cert, key: next.dtls.key, ca: next.dtls.ca },
      mqttDevices: { ...current.mqttDevices, cert: next.mqttDevices.cert, key: next.mqttDevices.key, ca: next.mqttDevices.ca },
      log: next.log,
    };
    return { devices, dtlsSessionsClosed, dtlsCredentials, mqttTlsCredentials, restartNeeded };
  };
}

/** Leaf keys ("coap.port") whose values differ; `devices` compares as one key. */
function changedKeys(before: GatewayConfig, after: GatewayConfig): string[] {
  const flat = (value: unknown, prefix: string, into: Map<string, string>): Map<string, string> => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value)) {
      for (const [key, child] of Object.entries(value)) flat(child, prefix ? `${prefix}.${key}` : key, into);
    } else into.set(prefix, JSON.stringify(value));
    return into;
  };
  const a = flat(before, '', new Map());
  const b = flat(after, '', new Map());
  return [...new Set([...a.keys(), ...b.keys()])].filter((key) => a.get(key) !== b.get(key));
}

/**
 * SIGHUP's default would end the process: from the start of a run it is caught, and one arriving while
 * the gateway starts is applied once it runs.
 */
export class ReloadSignal {
  private deferred = false;
  private handler: () => void = () => void (this.deferred = true);

  constructor() {
    process.on('SIGHUP', this.handler);
  }

  /** From now on SIGHUP calls `reload`; at once if one came during the start. */
  attach(reload: () => void): void {
    process.off('SIGHUP', this.handler);
    this.handler = reload;
    process.on('SIGHUP', reload);
    if (this.deferred) reload();
  }

  detach(): void {
    process.off('SIGHUP', this.handler);
  }
}

/** The running gateway as a reload sees it. */
export interface Reloadable {
  reload(next: GatewayConfig): ReloadReport;
}

export function reloadConfiguration(gateway: Reloadable, file: string | undefined, stateDir: string, log: Logger): ReloadStatus {
  const result = loadConfig({ file });
  const lines: string[] = [];
  let ok = true;
  if (!result.ok) {
    ok = false;
    lines.push('reload refused: the configuration has errors; still running with the previous one', ...result.errors);
    log.error({ config: file, errors: result.errors }, lines[0]!);
  } else {
    for (const warning of atMost(result.warnings, 'warnings')) log.warn({ config: file }, `configuration: ${warning}`);
    const report = gateway.reload(result.config);
    const { added, removed, changed } = report.devices;
    const summary = `devices: ${added.length} added, ${removed.length} removed, ${changed.length} changed`;
    lines.push(summary);
    log.info(
      { added, removed, changed, dtlsSessionsClosed: report.dtlsSessionsClosed, devices: result.config.devices.length },
      `configuration reloaded: ${summary}`,
    );
    if (report.dtlsSessionsClosed > 0) lines.push(`DTLS sessions closed for removed or changed devices: ${report.dtlsSessionsClosed}`);
    if (report.dtlsCredentials === 'reloaded') {
      lines.push('DTLS certificate, key and CA reloaded for new handshakes');
      log.info('DTLS certificate, key and CA reloaded; established sessions keep theirs');
    } else if (typeof report.dtlsCredentials === 'object') {
      ok = false;
      lines.push(`DTLS material not reloaded, the previous stays in use: ${report.dtlsCredentials.error}`);
      log.error({ reason: report.dtlsCredentials.error }, 'DTLS certificate/key not reloaded; the previous ones stay in use');
    }
    if (report.mqttTlsCredentials === 'reloaded') {
      lines.push('MQTT TLS certificate, key and CA reloaded for new connections');
      log.info('MQTT TLS certificate, key and CA reloaded; open connections keep theirs');
    } else if (typeof report.mqttTlsCredentials === 'object') {
      ok = false;
      lines.push(`MQTT TLS material not reloaded, the previous stays in use: ${report.mqttTlsCredentials.error}`);
      log.error({ reason: report.mqttTlsCredentials.error }, 'MQTT TLS certificate/key not reloaded; the previous ones stay in use');
    }
    if (report.restartNeeded.length > 0) {
      lines.push(`needs a restart to take effect (systemctl restart coap2mqtt): ${report.restartNeeded.join(', ')}`);
      log.warn({ keys: report.restartNeeded }, 'changed settings that need a restart to take effect: not applied');
    }
  }
  const status: ReloadStatus = { at: Date.now(), ok, lines };
  try {
    writeReloadStatus(stateDir, status);
  } catch (error) {
    log.warn({ err: error }, 'could not write the reload status file for coap2mqtt devices');
  }
  return status;
}
