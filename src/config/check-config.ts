// `coap2mqtt check-config [--migrate]`: the verdict on a configuration, as a technician reads it, and the
// one place that rewrites the file for renamed keys (the gateway itself never writes /etc).
import { readFileSync } from 'node:fs';
import { redactUrl } from '../log.js';
import { backupFile, writeFileAtomic } from './atomic-file.js';
import type { LoadResult } from './load.js';
import { migrateText } from './migrations.js';

export interface Output {
  out(line: string): void;
  err(line: string): void;
}

/**
 * Lines printed per kind: a list of 100,000 broken devices is one mistake, and stderr to a pipe is
 * written asynchronously, so a flood was cut off anyway when the process exited.
 */
const MAX_LINES = 50;

/** Prints errors (and any warnings) of a configuration that cannot be used. */
export function printConfigErrors(file: string | undefined, result: LoadResult & { ok: false }, output: Output): void {
  output.err(`coap2mqtt: invalid configuration${file ? ` in ${file}` : ''}:`);
  for (const line of atMost(result.errors, 'errors')) output.err(`  - ${line}`);
  for (const warning of atMost(result.warnings ?? [], 'warnings')) output.err(`  warning: ${warning}`);
}

export function atMost(lines: readonly string[], what: string, max = MAX_LINES): string[] {
  return lines.length <= max ? [...lines] : [...lines.slice(0, max), `… and ${lines.length - max} more ${what}`];
}

/** Exit status: 0 usable (warnings allowed), 1 the migration could not be written, 2 invalid. */
export function checkConfig(file: string | undefined, result: LoadResult, options: { migrate: boolean }, output: Output): number {
  if (!result.ok) {
    printConfigErrors(file, result, output);
    return 2;
  }
  let warnings = result.warnings;
  if (options.migrate) {
    if (file === undefined) {
      output.err('coap2mqtt: --migrate needs the file to rewrite: --config FILE or COAP2MQTT_CONFIG');
      return 2;
    }
    const migrated = migrateText(readFileSync(file, 'utf8'));
    if (!migrated) output.out(`nothing to migrate in ${file}`);
    else {
      try {
        const backup = backupFile(file);
        writeFileAtomic(file, migrated.text);
        output.out(
          `migrated ${file}: renamed keys now use their new names; the previous file is kept as ${backup}` +
            (migrated.keptComments ? '' : ' (the new file was written afresh: its comments are only in the backup)'),
        );
        // The renames' warnings are settled now.
        warnings = warnings.filter((warning) => !/ renamed .* in coap2mqtt /.test(warning) || /^COAP2MQTT_/.test(warning));
      } catch (error) {
        output.err(`coap2mqtt: cannot rewrite ${file}: ${(error as Error).message}; it is unchanged, and still usable as it is`);
        return 1;
      }
    }
  }
  for (const warning of atMost(warnings, 'warnings')) output.out(`warning: ${warning}`);
  const { config } = result;
  const upstream = config.upstream.url === '' ? 'embedded broker (data stays local)' : redactUrl(config.upstream.url);
  output.out(
    `configuration OK${file ? ` (${file})` : ' (defaults)'}: CoAP on udp ${config.coap.host} port ${config.coap.port}` +
      `${config.dtls.enabled ? `, DTLS on udp port ${config.dtls.port}` : ''}, ${config.devices.length} device(s), upstream ${upstream}` +
      `${config.http.enabled ? `, health and metrics on http://${config.http.host.includes(":") ? `[${config.http.host}]` : config.http.host}:${config.http.port}` : ''}` +
      `${config.deviceHttp.enabled ? `, HTTP device API on tcp ${config.deviceHttp.host} port ${config.deviceHttp.port}` : ''}` +
      `${config.mqttDevices.enabled ? `, MQTT device API on tcp ${config.mqttDevices.host} port ${config.mqttDevices.port}${config.mqttDevices.tls ? ` (TLS ${config.mqttDevices.tlsPort})` : ''}` : ''}` +
      `${config.thethings.enabled ? ', thethings.io paths under /v2/things' : ''}`,
  );
  return 0;
}
