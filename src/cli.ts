#!/usr/bin/env node
// Entry point: arguments, configuration, start, signals, exit codes.
//   0 clean stop · 1 start-up or runtime failure · 2 invalid configuration or usage
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { atMost, checkConfig, printConfigErrors, type Output } from './config/check-config.js';
import { loadConfig, type GatewayConfig, type LoadResult } from './config/load.js';
import { checkStartPaths } from './config/paths.js';
import { runDevicesCommand } from './devices/devices-command.js';
import { ConfigurationError, StartupError, startGateway, type Gateway } from './gateway.js';
import { createLogger } from './log.js';
import { runDoctor } from './ops/doctor/runner.js';
import { ReloadSignal, reloadConfiguration } from './ops/reload.js';
import { removePidFile, writePidFile } from './ops/running-gateway.js';
import { gatewayStatus, notifyStatusOnce, SystemdNotifier } from './ops/systemd.js';

const USAGE = `Usage:
  coap2mqtt [run] [--config FILE]                     start the gateway
  coap2mqtt check-config [--config FILE] [--migrate]  validate the configuration and exit;
                                                      --migrate rewrites renamed keys (keeping a backup)
  coap2mqtt devices list|add|remove ...               show or edit the device list (devices --help)
  coap2mqtt doctor [--config FILE] [--json]           check broker, certificates, clock, disk and ports;
                                                      exit 1 when a check FAILs
  coap2mqtt --help | --version

The configuration file (JSON or JSON5) comes from --config or COAP2MQTT_CONFIG; without one,
built-in defaults apply: CoAP on UDP 5683 and an embedded MQTT broker on 127.0.0.1:1883.
SIGHUP (systemctl reload coap2mqtt) re-reads the device list and the DTLS certificate, key and CA.
Exit status: 0 stopped cleanly, 1 failed at run time, 2 invalid configuration or usage.`;

const output: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  // Its own options (--type, --token, ...): parsed there.
  if (argv[0] === 'devices') return runDevicesCommand(argv.slice(1), process.env, output);

  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        migrate: { type: 'boolean' },
        json: { type: 'boolean' },
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
  if (parsed.positionals.length > 1 || !['run', 'check-config', 'doctor'].includes(command)) {
    process.stderr.write(`coap2mqtt: unknown command "${parsed.positionals.join(' ')}"\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.migrate && command !== 'check-config') {
    process.stderr.write(`coap2mqtt: --migrate belongs to check-config\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.json && command !== 'doctor') {
    process.stderr.write(`coap2mqtt: --json belongs to doctor\n\n${USAGE}\n`);
    return 2;
  }

  const file = parsed.values.config ?? (process.env.COAP2MQTT_CONFIG || undefined);
  // doctor looks at state.dir itself, for the service's user, with the commands that fix it.
  const result = command === 'doctor' ? loadConfig({ file }) : withStartPaths(loadConfig({ file }));
  if (command === 'check-config') return checkConfig(file, result, { migrate: parsed.values.migrate === true }, output);
  if (!result.ok) {
    printConfigErrors(file, result, output);
    if (command === 'run') notifyStatusOnce(`invalid configuration: ${atMost(result.errors, 'errors', 3).join('; ')}`);
    return 2;
  }
  if (command === 'doctor') return runDoctor(file, result, { json: parsed.values.json === true }, output);
  return run(file, result.config, result.warnings, result.notices);
}

/** Runs the gateway until SIGTERM or SIGINT: systemd notifications, the pid file, SIGHUP reloads. */
async function run(file: string | undefined, config: GatewayConfig, warnings: readonly string[], notices: readonly string[]): Promise<number> {
  const log = createLogger({ level: config.log.level, pretty: config.log.pretty });
  for (const warning of atMost(warnings, 'warnings')) log.warn({ config: file }, `configuration: ${warning}`);
  for (const notice of notices) log.info(notice);

  // Under systemd (Type=notify): READY=1 once serving, STATUS for `systemctl status`, watchdog pings.
  const { level, components } = config.log;
  const systemd = new SystemdNotifier(log.child({ component: 'systemd' }, { level: components.systemd ?? level }));
  systemd.status('starting');

  const reloadSignal = new ReloadSignal();
  let gateway: Gateway;
  try {
    gateway = await startGateway(config, log);
  } catch (error) {
    systemd.status(`failed to start: ${(error as Error).message}`);
    if (error instanceof StartupError) {
      log.fatal(error.message);
      process.stderr.write(`coap2mqtt: ${error.message}\n`);
      return error instanceof ConfigurationError ? 2 : 1;
    }
    throw error;
  }
  try {
    writePidFile(gateway.stateDir);
  } catch (error) {
    log.warn({ err: error }, 'cannot write the pid file: coap2mqtt devices will not be able to reload this gateway');
  }

  const started = gateway;
  systemd.ready(gatewayStatus(started));
  // No healthy() callback: what /healthz calls degraded (broker down, disk full) is not cured by a restart;
  // a blocked event loop stops the pings by itself.
  systemd.startWatchdog({ status: () => gatewayStatus(started) });
  gateway.upstream.onConnected(() => systemd.status(gatewayStatus(started)));

  const reloadLog = gateway.logs.for('reload');
  const onReload = (): void => {
    reloadLog.info({ signal: 'SIGHUP' }, 'reloading the configuration');
    systemd.reloading();
    reloadConfiguration(gateway, file, gateway.stateDir, reloadLog);
    systemd.ready(gatewayStatus(started));
  };
  reloadSignal.attach(onReload);

  return new Promise<number>((resolve) => {
    let signalled = false;
    const finish = (code: number): void => {
      systemd.stop();
      reloadSignal.detach();
      removePidFile(gateway.stateDir);
      resolve(code);
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) {
        log.warn({ signal }, 'second signal: exiting without waiting');
        finish(1);
        return;
      }
      signalled = true;
      systemd.stopping();
      log.info({ signal }, 'stopping: answering requests in progress, then closing');
      gateway.stop().then(
        () => finish(0),
        (error: unknown) => {
          log.error({ err: error }, 'error while stopping');
          finish(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** The configuration, refused also for what the start would refuse (state.dir), so that exits 2, not 1. */
function withStartPaths(result: LoadResult): LoadResult {
  if (!result.ok) return result;
  const { errors, warnings } = checkStartPaths(result.config);
  if (errors.length > 0) return { ok: false, errors, warnings: [...result.warnings, ...warnings] };
  return { ...result, warnings: [...result.warnings, ...warnings] };
}

// `coap2mqtt devices list | head`: a reader that leaves early is not a failure worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`coap2mqtt: unexpected failure: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
