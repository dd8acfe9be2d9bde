#!/usr/bin/env node
// Entry point: arguments, configuration, start, signals, exit codes.
//   0 clean stop · 1 start-up or runtime failure · 2 invalid configuration or usage
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig, type LoadResult } from './config/load.js';
import { StartupError, startGateway, type Gateway } from './gateway.js';
import { createLogger, redactUrl } from './log.js';

const USAGE = `Usage:
  coap2mqtt [run] [--config FILE]        start the gateway
  coap2mqtt check-config [--config FILE] validate the configuration and exit
  coap2mqtt --help | --version

The configuration file (JSON or JSON5) comes from --config or COAP2MQTT_CONFIG; without one,
built-in defaults apply: CoAP on UDP 5683 and an embedded MQTT broker on 127.0.0.1:1883.
Exit status: 0 stopped cleanly, 1 failed at run time, 2 invalid configuration or usage.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function printConfigErrors(file: string | undefined, result: LoadResult & { ok: false }): void {
  process.stderr.write(`coap2mqtt: invalid configuration${file ? ` in ${file}` : ''}:\n`);
  for (const line of result.errors) process.stderr.write(`  - ${line}\n`);
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    process.stderr.write(`coap2mqtt: ${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (parsed.values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = parsed.positionals[0] ?? 'run';
  if (parsed.positionals.length > 1 || !['run', 'check-config'].includes(command)) {
    process.stderr.write(`coap2mqtt: unknown command "${parsed.positionals.join(' ')}"\n\n${USAGE}\n`);
    return 2;
  }

  const file = parsed.values.config ?? (process.env.COAP2MQTT_CONFIG || undefined);
  const result = loadConfig({ file });
  if (!result.ok) {
    printConfigErrors(file, result);
    return 2;
  }

  if (command === 'check-config') {
    for (const warning of result.warnings) process.stdout.write(`warning: ${warning}\n`);
    const { config } = result;
    const upstream = config.upstream.url === '' ? 'embedded broker (data stays local)' : redactUrl(config.upstream.url);
    process.stdout.write(
      `configuration OK${file ? ` (${file})` : ' (defaults)'}: CoAP on udp ${config.coap.host} port ${config.coap.port}, ` +
        `${config.devices.length} device(s), upstream ${upstream}\n`,
    );
    return 0;
  }

  const log = createLogger(result.config.log.level);
  for (const warning of result.warnings) log.warn({ config: file }, `configuration: ${warning}`);
  for (const notice of result.notices) log.info(notice);

  let gateway: Gateway;
  try {
    gateway = await startGateway(result.config, log);
  } catch (error) {
    if (error instanceof StartupError) {
      log.fatal(error.message);
      process.stderr.write(`coap2mqtt: ${error.message}\n`);
      return 1;
    }
    throw error;
  }

  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) {
        log.warn({ signal }, 'second signal: exiting without waiting');
        resolve(1);
        return;
      }
      signalled = true;
      log.info({ signal }, 'stopping: answering requests in progress, then closing');
      gateway.stop().then(
        () => resolve(0),
        (error: unknown) => {
          log.error({ err: error }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`coap2mqtt: unexpected failure: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
