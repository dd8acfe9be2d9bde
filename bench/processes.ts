// Child processes of the benchmark and what they cost: CPU from /proc/PID/stat, memory from
// /proc/PID/status, UDP drops from /proc/net/snmp.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const KEPT_LOG_LINES = 50;

export class ManagedProcess {
  readonly child: ChildProcess;
  /** Noteworthy output, as `isNotable` judges it. */
  readonly notableLines: string[] = [];
  notableCount = 0;
  private readonly exited: Promise<number | null>;
  private hasExited = false;
  private readonly lineListeners = new Set<(line: string) => void>();

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    private readonly isNotable: (line: string, fromStderr: boolean) => boolean = isWarningOrStderr,
  ) {
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      const exit = (code: number | null): void => {
        this.hasExited = true;
        resolve(code);
      };
      this.child.once('exit', exit);
      this.child.once('error', (error) => {
        this.note(`${name}: ${error.message}`);
        if (this.child.pid === undefined) exit(null); // it never started, so no 'exit' will follow
      });
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line, false));
    createInterface({ input: this.child.stderr! }).on('line', (line) => this.onLine(line, true));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return !this.hasExited;
  }

  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        finish(new Error(`${this.name}: no line matching ${pattern} within ${timeoutMs} ms: ${this.notableLines.join(' | ')}`));
      }, timeoutMs);
      const listener = (line: string): void => {
        if (pattern.test(line)) finish(line);
      };
      const finish = (outcome: string | Error): void => {
        clearTimeout(timer);
        this.lineListeners.delete(listener);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      this.lineListeners.add(listener);
      void this.exited.then((code) => finish(new Error(`${this.name} exited (${code}): ${this.notableLines.join(' | ')}`)));
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`; resolves with the exit code. */
  async stop(graceMs = 5000): Promise<number | null> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exited;
  }

  /** SIGKILL, as a crash or a power cut would end it; resolves once it has gone. */
  async kill(): Promise<number | null> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  private onLine(line: string, fromStderr: boolean): void {
    for (const listener of this.lineListeners) listener(line);
    if (this.isNotable(line, fromStderr)) this.note(line);
  }

  private note(line: string): void {
    this.notableCount++;
    if (this.notableLines.length < KEPT_LOG_LINES) this.notableLines.push(line);
  }
}

/** Anything on stderr, and JSON (pino) log lines at warn level or above, by number or by label. */
function isWarningOrStderr(line: string, fromStderr: boolean): boolean {
  if (fromStderr) return true;
  if (!line.startsWith('{')) return false;
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' ? level >= 40 : ['warn', 'error', 'fatal'].includes(String(level));
  } catch {
    return false;
  }
}

export interface ProcessSample {
  readonly cpuSeconds: number;
  readonly rssBytes: number;
}

/** Undefined once the process has gone. */
export function sampleProcess(pid: number): ProcessSample | undefined {
  let stat: string;
  let status: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the parenthesised command name (which may contain spaces): utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssKb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return { cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND, rssBytes: Number(rssKb ?? 0) * 1024 };
}

export interface Usage {
  /** 100 = one core busy for the whole period. */
  readonly cpuPercent: number;
  readonly peakRssMB: number;
}

/** Samples a few processes every `intervalMs` for the peak RSS, and their CPU time over the whole period. */
export class UsageMeter {
  private readonly startedAt = performance.now();
  private readonly first = new Map<string, ProcessSample>();
  private readonly peakRss = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pids: Readonly<Record<string, number>>,
    intervalMs = 250,
  ) {
    for (const [name, sample] of this.sampleAll()) if (sample) this.first.set(name, sample);
    // Unref'd: a meter left running by a failed phase must not keep the harness alive.
    this.timer = setInterval(() => this.sampleAll(), intervalMs).unref();
  }

  /** Current RSS of one of the processes, in MB (NaN once it has gone). */
  rssMB(name: string): number {
    return (sampleProcess(this.pids[name]!)?.rssBytes ?? NaN) / 2 ** 20;
  }

  stop(): Record<string, Usage> {
    clearInterval(this.timer);
    const seconds = (performance.now() - this.startedAt) / 1000;
    const usage: Record<string, Usage> = {};
    for (const [name, last] of this.sampleAll()) {
      const cpu = (last?.cpuSeconds ?? NaN) - (this.first.get(name)?.cpuSeconds ?? NaN);
      usage[name] = { cpuPercent: (cpu / seconds) * 100, peakRssMB: (this.peakRss.get(name) ?? NaN) / 2 ** 20 };
    }
    return usage;
  }

  private sampleAll(): Array<[string, ProcessSample | undefined]> {
    return Object.entries(this.pids).map(([name, pid]) => {
      const sample = sampleProcess(pid);
      if (sample) this.peakRss.set(name, Math.max(this.peakRss.get(name) ?? 0, sample.rssBytes));
      return [name, sample];
    });
  }
}

/** Kernel-wide UDP drop counters: datagrams lost to full socket buffers on either side. */
export function udpDropCounters(): { receiveBufferErrors: number; sendBufferErrors: number } {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((line) => line.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/).map(Number);
  const value = (name: string): number => values[names.indexOf(name)] ?? 0;
  return { receiveBufferErrors: value('RcvbufErrors'), sendBufferErrors: value('SndbufErrors') };
}

export interface Measured<T> {
  readonly result: T;
  readonly usage: Record<string, Usage>;
  /** UDP datagrams the kernel dropped machine-wide meanwhile, for want of socket buffer. */
  readonly udpDrops: { readonly receiveBuffer: number; readonly sendBuffer: number };
}

/** Runs `work` while metering the processes in `pids` and the kernel's UDP drop counters. */
export async function measureWhile<T>(pids: Record<string, number>, work: () => Promise<T>): Promise<Measured<T>> {
  const dropsBefore = udpDropCounters();
  const meter = new UsageMeter(pids);
  const result = await work();
  const usage = meter.stop();
  const dropsAfter = udpDropCounters();
  return {
    result,
    usage,
    udpDrops: {
      receiveBuffer: dropsAfter.receiveBufferErrors - dropsBefore.receiveBufferErrors,
      sendBuffer: dropsAfter.sendBufferErrors - dropsBefore.sendBufferErrors,
    },
  };
}

/**
 * CPU time the whole machine has spent so far (/proc/stat, all cores, every process and the kernel), in
 * seconds: busy, and stolen (the hypervisor running another VM). Less the bench's own processes, what other
 * work on the machine took while a phase ran.
 */
export function machineCpu(): { busySeconds: number; stealSeconds: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return { busySeconds: (user + nice + system + irq + softirq) / CLOCK_TICKS_PER_SECOND, stealSeconds: steal / CLOCK_TICKS_PER_SECOND };
}
