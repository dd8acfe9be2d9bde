// One run of the built CLI (node dist/cli.js ...) to its end, for tests that only look at how it exits:
// the status, what it printed, and whether it had to be killed because it hung.
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI } from './gateway-process.js';

export interface CliOutcome {
  /** null: killed after `timeoutMs` (it hung, or started serving when it should have refused). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliOptions {
  readonly env?: Record<string, string>;
  readonly timeoutMs?: number;
  /** Run as another user (needs root), e.g. to see a directory the test user can write but others cannot. */
  readonly uid?: number;
  readonly gid?: number;
}

const running = new Set<ChildProcess>();

/** Kills whatever a failed test left running. */
export function killLeftoverCliRuns(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

export function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliOutcome> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH ?? '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.gid ?? options.uid }),
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}
