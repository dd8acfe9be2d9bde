import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort, sleep } from './ports.js';

export interface MosquittoOptions {
  /** User name → password: only these may log in (no anonymous clients). */
  readonly users?: Readonly<Record<string, string>>;
  /** A TLS listener with this certificate and key (PEM files) instead of plain TCP. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/**
 * A real mosquitto on loopback, on a port of its own; stop() and start() again keep the port. It keeps its
 * default Nagle's algorithm (no set_tcp_nodelay), the harder case for PUBACK latency (upstream-acks.test.ts).
 */
export class Mosquitto {
  private process: ChildProcess | undefined;
  private readonly dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-mosquitto-'));

  private constructor(
    readonly port: number,
    private readonly options: MosquittoOptions = {},
  ) {}

  /** Starts a broker on `port`, or on a free one. */
  static async start(port?: number, options: MosquittoOptions = {}): Promise<Mosquitto> {
    const broker = new Mosquitto(port ?? (await freeTcpPort()), options);
    await broker.start();
    return broker;
  }

  get url(): string {
    return `${this.options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const config = join(this.dir, 'mosquitto.conf');
    const { users, tls } = this.options;
    const access = users ? ['allow_anonymous false', `password_file ${this.writePasswordFile(users)}`] : ['allow_anonymous true'];
    const listener = tls ? [`certfile ${tls.certFile}`, `keyfile ${tls.keyFile}`] : [];
    // Started as root, mosquitto reads these files only after switching to its own user, which may not
    // enter the test's private temporary directories (as another user this line has no effect).
    if (users || tls) listener.push('user root');
    writeFileSync(
      config,
      [`listener ${this.port} 127.0.0.1`, ...listener, ...access, 'persistence false', 'max_inflight_messages 0', 'max_queued_messages 100000', 'log_dest stderr', 'log_type error', ''].join('\n'),
    );
    const child = spawn('mosquitto', ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    this.process = child;
    const deadline = Date.now() + 5000;
    while (!(await accepts(this.port))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`mosquitto did not start on port ${this.port}: ${stderr}`);
      await sleep(25);
    }
  }

  private writePasswordFile(users: Readonly<Record<string, string>>): string {
    const file = join(this.dir, 'passwords');
    writeFileSync(file, '', { mode: 0o600 });
    for (const [user, password] of Object.entries(users)) execFileSync('mosquitto_passwd', ['-b', file, user, password], { stdio: 'ignore' });
    return file;
  }

  /** Kills the broker the hard way, as a crash or a pulled cable would. */
  async stop(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
