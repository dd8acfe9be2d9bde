// What every check of doctor looks at, gathered once: the configuration, the state directory, whether a
// gateway runs on it, the service's user, and the outbox as far as it can be read without touching it.
import { join, resolve } from 'node:path';
import type { GatewayConfig, LoadResult } from '../../config/load.js';
import { inspectOutbox, type OutboxInspection } from '../../outbox/inspect.js';
import { findRunningGateway } from '../running-gateway.js';
import type { SystemUser } from '../system-user.js';
import type { WriteRate } from '../write-rate.js';
import { FUTURE_TOLERANCE_MS } from './clock.js';
import { accounts } from './permissions.js';
import type { Report } from './report.js';
import { startWriteSample, type StorageCheckInput } from './storage.js';

/** The user the packaged systemd unit runs the gateway as. */
export const SERVICE_USER = 'coap2mqtt';

export interface Context {
  /** The configuration file, when one was given. */
  readonly file: string | undefined;
  readonly config: GatewayConfig;
  /** What loading the configuration warned about. */
  readonly warnings: readonly string[];
  /** Absolute, as the gateway resolves it from the current directory. */
  readonly stateDir: string;
  /** A coap2mqtt running on this state directory, from its pid file. */
  readonly runningPid: number | undefined;
  /** The service's user, when it exists on this box: whose access matters. */
  readonly service: SystemUser | undefined;
  readonly outbox: OutboxInspection | undefined;
  readonly storage: StorageCheckInput;
  /** The running gateway's writes, sampled while the other checks run. */
  readonly writeSample: Promise<WriteRate | { readonly unknown: readonly string[] }> | undefined;
}

/** One check: adds its lines to the report. */
export type Check = (report: Report, context: Context) => void | Promise<void>;

export function gatherContext(file: string | undefined, result: LoadResult & { ok: true }): Context {
  const config = result.config;
  const stateDir = resolve(config.state.dir);
  const runningPid = findRunningGateway(stateDir);
  const storage: StorageCheckInput = {
    stateDir,
    outbox: config.outbox,
    runningPid,
    metrics: config.http.enabled ? { host: config.http.host, port: config.http.port } : undefined,
  };
  // Started first, so that the wait overlaps the other checks and costs no time of its own.
  const writeSample = startWriteSample(storage);
  return {
    file,
    config,
    warnings: result.warnings,
    stateDir,
    runningPid,
    // Whose access matters is the service's, whoever runs doctor (root's own access proves nothing).
    service: accounts.user(SERVICE_USER),
    outbox: config.outbox.enabled ? inspectOutbox(join(stateDir, 'outbox.sqlite'), { createdAfter: Date.now() + FUTURE_TOLERANCE_MS }) : undefined,
    storage,
    writeSample,
  };
}
