// How technician commands find the gateway running on the same state directory and ask it to reload:
// a pid file it writes at start (the outbox lock already guarantees one gateway per state.dir), SIGHUP,
// and a small status file it writes after each reload, so the command can say what happened.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../config/atomic-file.js';

const PID_FILE = 'coap2mqtt.pid';
const RELOAD_STATUS_FILE = 'last-reload.json';

export interface ReloadStatus {
  /** Milliseconds since the epoch when the reload finished. */
  readonly at: number;
  readonly ok: boolean;
  /** One line each, as logged. */
  readonly lines: readonly string[];
}

export function writePidFile(stateDir: string): void {
  writeFileAtomic(join(stateDir, PID_FILE), `${process.pid}\n`, 0o644);
}

/** Only our own pid file: a second gateway refused at start must not remove the running one's. */
export function removePidFile(stateDir: string): void {
  try {
    if (readFileSync(join(stateDir, PID_FILE), 'utf8').trim() === String(process.pid)) rmSync(join(stateDir, PID_FILE));
  } catch {
    // Already gone.
  }
}

/** The pid of a live coap2mqtt on this state directory, if any (a stale file's pid may be reused by anything). */
export function findRunningGateway(stateDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(join(stateDir, PID_FILE), 'utf8'), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    const commandLine = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /coap2mqtt|cli\.js/.test(commandLine) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function writeReloadStatus(stateDir: string, status: ReloadStatus): void {
  writeFileAtomic(join(stateDir, RELOAD_STATUS_FILE), `${JSON.stringify(status)}\n`, 0o644);
}

/** Signals the gateway and waits (up to timeoutMs) for the status of the reload it caused. */
export async function reloadRunningGateway(
  stateDir: string,
  timeoutMs = 5000,
): Promise<{ readonly pid: number; readonly status: ReloadStatus | undefined } | undefined> {
  const pid = findRunningGateway(stateDir);
  if (pid === undefined) return undefined;
  const sentAt = Date.now();
  process.kill(pid, 'SIGHUP');
  const deadline = sentAt + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    try {
      const status = JSON.parse(readFileSync(join(stateDir, RELOAD_STATUS_FILE), 'utf8')) as ReloadStatus;
      if (status.at >= sentAt) return { pid, status };
    } catch {
      // Not written yet.
    }
  }
  return { pid, status: undefined };
}
