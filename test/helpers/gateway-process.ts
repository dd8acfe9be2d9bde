// The built gateway as a real process (node dist/cli.js --config FILE), for tests that kill it, restart it
// on the same state directory, or run it inside another mount namespace. Every process started here is
// remembered until it exits, so a test's afterEach can kill whatever a failure left behind.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eventually } from './ports.js';

/** The CLI under test: dist/cli.js (`npm run build`), or COAP2MQTT_TEST_CLI to run the suite against another build. */
export const CLI = process.env.COAP2MQTT_TEST_CLI || join(import.meta.dirname, '../../dist/cli.js');

export interface Device {
  readonly name: string;
  readonly type: string;
  readonly token: string;
}

/** `count` devices named Dev-00, Dev-01, … with tokens dev-token-00, … */
export function makeDevices(count: number): Device[] {
  return Array.from({ length: count }, (_, i) => {
    const id = String(i).padStart(2, '0');
    return { name: `Dev-${id}`, type: 'sensor', token: `dev-token-${id}` };
  });
}

export interface GatewayConfigOptions {
  readonly port: number;
  readonly brokerUrl: string;
  readonly stateDir: string;
  readonly devices: readonly Device[];
  /** Merged over the defaults below, one level deep per section. */
  readonly extra?: Record<string, Record<string, unknown>>;
}

/**
 * A config for a gateway talking to a test broker: fast reconnects, quiet logs (info: state changes only),
 * no wait for ThingsBoard's session limits (a bare mosquitto never answers them), and no per-device rate
 * limit (these tests send one device's readings far faster than a real device would).
 */
export function gatewayConfig(options: GatewayConfigOptions): Record<string, unknown> {
  const base: Record<string, Record<string, unknown>> = {
    coap: { host: '127.0.0.1', port: options.port },
    upstream: {
      url: options.brokerUrl,
      accessToken: 'gateway-token',
      reconnectMinMs: 200,
      reconnectMaxMs: 1000,
      sessionLimitsTimeoutMs: 0,
    },
    limits: { deviceRequestsPerSecond: 0 },
    state: { dir: options.stateDir },
    log: { level: 'info' },
  };
  for (const [section, values] of Object.entries(options.extra ?? {})) base[section] = { ...base[section], ...values };
  return { ...base, devices: options.devices };
}

export function writeConfigFile(dir: string, config: Record<string, unknown>): string {
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const live = new Set<GatewayProcess>();

/** Kills (SIGKILL) every gateway process still running; for afterEach/afterAll. */
export async function killAllGatewayProcesses(): Promise<void> {
  await Promise.all([...live].map((gateway) => gateway.kill('SIGKILL')));
}

export class GatewayProcess {
  private stdoutText = '';
  private stderrText = '';
  private pending = '';
  private readonly lines: Array<Record<string, unknown>> = [];
  readonly exited: Promise<ExitStatus>;
  readonly startedAt = Date.now();

  private constructor(
    readonly child: ChildProcess,
    readonly configFile: string,
  ) {
    child.stdout!.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      this.stdoutText += text;
      this.pending += text;
      const complete = this.pending.split('\n');
      this.pending = complete.pop()!;
      for (const line of complete) {
        if (line.trim() === '') continue;
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ msg: line, unparsed: true });
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (this.stderrText += chunk.toString()));
    this.exited = new Promise<ExitStatus>((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(this);
        resolve({ code, signal });
      });
    });
    live.add(this);
  }

  /**
   * Starts `node CLI --config FILE`. `wrap` is a command prefix, e.g. ['nsenter', '-t', pid, '-m', '--'] to run
   * it in another mount namespace (nsenter execs node in place, so signals reach node itself).
   */
  static start(
    configFile: string,
    options: { wrap?: readonly string[]; nodeArgs?: readonly string[]; env?: Readonly<Record<string, string>> } = {},
  ): GatewayProcess {
    const argv = [...(options.wrap ?? []), process.execPath, ...(options.nodeArgs ?? []), CLI, '--config', configFile];
    const child = spawn(argv[0]!, argv.slice(1), {
      // A free port for /healthz and /metrics unless the test asks for one: tests run in parallel.
      env: { PATH: process.env.PATH ?? '', COAP2MQTT_HTTP_PORT: '0', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new GatewayProcess(child, configFile);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Parsed JSON log lines (pino) so far. */
  logs(): ReadonlyArray<Record<string, unknown>> {
    return this.lines;
  }

  stdout(): string {
    return this.stdoutText;
  }

  stderr(): string {
    return this.stderrText;
  }

  /** The first log line whose msg matches, once it appears; fails early if the process exits first. */
  async waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    return eventually(
      () => {
        const line = this.lines.find((l) => pattern.test(String(l.msg)));
        if (line) return line;
        if (!this.running) throw new Error(`gateway exited (${this.child.exitCode ?? this.child.signalCode}) before logging ${pattern}:\n${this.describe()}`);
        return undefined;
      },
      timeoutMs,
      `gateway log ${pattern}`,
    );
  }

  /** Resolves once the CoAP socket is bound ("coap2mqtt started"). */
  ready(timeoutMs = 10_000): Promise<Record<string, unknown>> {
    return this.waitForLog(/^coap2mqtt started/, timeoutMs);
  }

  /** Sends `signal` (unless already gone) and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitStatus> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** The last lines of output, for failure messages. */
  describe(lines = 30): string {
    const tail = this.stdoutText.split('\n').slice(-lines).join('\n');
    return `--- gateway stdout (last ${lines} lines) ---\n${tail}\n--- gateway stderr ---\n${this.stderrText.slice(-4000)}`;
  }
}
