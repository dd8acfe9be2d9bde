// SIGHUP (systemctl reload coap2mqtt, or coap2mqtt devices add/remove): read the configuration again and
// apply what can change while running. A configuration with errors changes nothing: the gateway carries
// on with the one it has, and says so.
import type { Logger } from 'pino';
import { atMost } from '../config/check-config.js';
import { loadConfig } from '../config/load.js';
import type { Gateway } from '../gateway.js';
import { writeReloadStatus, type ReloadStatus } from './running-gateway.js';

export function reloadConfiguration(gateway: Gateway, file: string | undefined, stateDir: string, log: Logger): ReloadStatus {
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
