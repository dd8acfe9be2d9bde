// A tiny tmpfs that only a private mount namespace sees, to fill a disk without touching the machine's:
// a holder process (`sleep infinity`) keeps the namespace alive, and commands join it with nsenter. As
// root (CI) a plain `unshare --mount`; otherwise a user namespace (`unshare -r -m`), where mounting tmpfs
// is allowed too. Nothing leaks: the mount dies with the holder.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './ports.js';

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class TmpfsNamespace {
  private constructor(
    private readonly holder: ChildProcess,
    /** The mount point: an empty directory outside, the tmpfs inside the namespace. */
    readonly dir: string,
    readonly sizeBytes: number,
    private readonly userNamespace: boolean,
  ) {}

  /** Mounts a tmpfs of `sizeKiB` on a fresh directory inside a new private mount namespace. */
  static async create(sizeKiB: number): Promise<TmpfsNamespace> {
    const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-tmpfs-'));
    const root = process.getuid?.() === 0;
    const unshareArgs = root ? ['--mount', '--propagation', 'private'] : ['--user', '--map-root-user', '--mount', '--propagation', 'private'];
    const script = `mount -t tmpfs -o size=${sizeKiB}k tmpfs '${dir}' && echo mounted && exec sleep infinity`;
    const holder = spawn('unshare', [...unshareArgs, 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    holder.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    holder.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const namespace = new TmpfsNamespace(holder, dir, sizeKiB * 1024, !root);
    try {
      await eventually(
        () => {
          if (holder.exitCode !== null) throw new Error(`cannot create a private tmpfs (unshare ${unshareArgs.join(' ')}): ${err.trim() || `exit ${holder.exitCode}`}`);
          return out.includes('mounted');
        },
        5000,
        'the tmpfs namespace',
      );
    } catch (error) {
      await namespace.dispose();
      throw error;
    }
    return namespace;
  }

  get pid(): number {
    return this.holder.pid!;
  }

  /** Command prefix that runs a program inside the namespace (nsenter execs it in place: signals reach it). */
  get wrap(): string[] {
    return ['nsenter', '-t', String(this.pid), ...(this.userNamespace ? ['-U', '--preserve-credentials'] : []), '-m', '--'];
  }

  /** Runs a command inside the namespace to completion. */
  exec(command: readonly string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    const argv = [...this.wrap, ...command];
    return new Promise((resolve) => {
      execFile(argv[0]!, argv.slice(1), { cwd: options.cwd, timeout: options.timeoutMs ?? 20_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Free bytes on the tmpfs as seen inside (statfs). */
  async freeBytes(): Promise<number> {
    const result = await this.exec([process.execPath, '-e', `const s=require('fs').statfsSync(${JSON.stringify(this.dir)});process.stdout.write(String(s.bavail*s.bsize))`]);
    if (result.code !== 0) throw new Error(`statfs in the namespace failed: ${result.stderr}`);
    return Number(result.stdout);
  }

  /** Whether the tmpfs is really mounted inside (and not outside). */
  async mounted(): Promise<{ inside: boolean }> {
    const result = await this.exec(['sh', '-c', `grep -q " ${this.dir} tmpfs " /proc/self/mounts && echo yes || echo no`]);
    return { inside: result.stdout.trim() === 'yes' };
  }

  async dispose(): Promise<void> {
    if (this.holder.exitCode === null && this.holder.signalCode === null) {
      const exited = new Promise((resolve) => this.holder.once('exit', resolve));
      this.holder.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
