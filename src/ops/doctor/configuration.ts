// Whether the configuration loaded, and what loading it warned about.
import type { Context } from './context.js';
import type { Report } from './report.js';

export function checkConfiguration(report: Report, { file, config, warnings }: Context): void {
  const devices = config.devices.length;
  const source = file ?? 'no file given (built-in defaults and COAP2MQTT_* variables)';
  report.add('ok', 'configuration', `${source}: valid, ${devices} device${devices === 1 ? '' : 's'}`);
  for (const warning of warnings) report.add('warn', 'configuration', warning);
}
