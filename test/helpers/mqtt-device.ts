// MQTT devices for the MQTT device front end's tests: mosquitto_pub and mosquitto_sub as the simplest
// devices (what a technician types), and MQTT.js where a device must hold a session, ask and wait for an
// answer, or read the CONNACK and SUBACK themselves.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { eventually } from './ports.js';

export interface ToolResult {
  /** The process's exit code: 0 sent (at QoS 1: PUBACKed); mosquitto_pub exits 5 on CONNACK 5. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** One mosquitto_pub run against the gateway's plain MQTT port as the device of `token`. */
export function mosquittoPub(port: number, token: string, topic: string, message: string, extra: readonly string[] = []): Promise<ToolResult> {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-u', token, '-t', topic, '-m', message, ...extra];
  return new Promise((resolve) => {
    execFile('mosquitto_pub', args, { timeout: 10_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Heard {
  readonly topic: string;
  readonly text: string;
  readonly json: unknown;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * mosquitto_sub as a device, started with -d so its debug lines tell when the SUBACK came (and what it
 * granted); -v prints each message as "topic payload" on a line of its own.
 */
export class MosquittoSub {
  readonly heard: Heard[] = [];
  private output = '';
  private granted: number[] | undefined;
  private exitCode: number | null = null;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.on('data', (chunk: Buffer) => this.read(chunk.toString()));
    child.on('exit', (code) => (this.exitCode = code ?? -1));
  }

  /** Resolves once the gateway's SUBACK arrived. `extra`: e.g. ['-C', '1'] to exit after one message. */
  static async start(port: number, token: string, topics: readonly string[], extra: readonly string[] = []): Promise<MosquittoSub> {
    const args = ['-h', '127.0.0.1', '-p', String(port), '-u', token, '-q', '1', '-d', '-v', ...topics.flatMap((topic) => ['-t', topic]), ...extra];
    const sub = new MosquittoSub(spawn('stdbuf', ['-oL', 'mosquitto_sub', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
    // stdbuf: piped, mosquitto_sub would hold its lines in a full stdio buffer until it exits.
    await eventually(() => sub.granted !== undefined || sub.exitCode !== null, 5000, 'mosquitto_sub\'s SUBACK').catch(() => undefined);
    if (sub.granted !== undefined) return sub;
    await sub.stop();
    throw new Error(`mosquitto_sub had no SUBACK (exit ${String(sub.exitCode)}): ${sub.output}`);
  }

  /** The QoS granted per topic in the SUBACK (128: refused). */
  get grantedQos(): readonly number[] {
    return this.granted ?? [];
  }

  get exited(): number | null {
    return this.exitCode;
  }

  waitFor(count = 1, timeoutMs = 5000): Promise<Heard[]> {
    return eventually(() => (this.heard.length >= count ? this.heard : undefined), timeoutMs, `${count} message(s) at mosquitto_sub`);
  }

  /** Ends the process (it is ours) and waits for it. */
  async stop(): Promise<void> {
    if (this.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }

  private read(text: string): void {
    this.output += text;
    const lines = this.output.split('\n');
    this.output = lines.pop()!;
    for (const line of lines) {
      const subscribed = /^Subscribed \(mid: \d+\): (.*)$/.exec(line);
      if (subscribed) this.granted = subscribed[1]!.split(',').map((qos) => Number(qos.trim()));
      else if (!line.startsWith('Client ') && line.includes(' ')) {
        const space = line.indexOf(' ');
        const payload = line.slice(space + 1);
        this.heard.push({ topic: line.slice(0, space), text: payload, json: parse(payload) });
      }
    }
  }
}

export interface DeviceMessage extends Heard {
  readonly payload: Buffer;
}

/** An MQTT.js device that records every PUBLISH it gets, subscribed or not, and never reconnects by itself. */
export class MqttDevice {
  readonly received: DeviceMessage[] = [];
  private isClosed = false;

  private constructor(
    readonly client: MqttClient,
    readonly connack: IConnackPacket,
  ) {
    client.on('message', (topic, payload) => this.received.push({ topic, payload: Buffer.from(payload), text: payload.toString(), json: parse(payload.toString()) }));
    client.on('close', () => (this.isClosed = true));
    client.on('error', () => {});
  }

  /** Connects as the device of `token` (the MQTT username); rejects with MQTT.js's error on a refused CONNACK (error.code: its return code). */
  static connect(port: number, token: string, options: IClientOptions = {}): Promise<MqttDevice> {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { username: token, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 5000, ...options });
    return new Promise((resolve, reject) => {
      client.once('connect', (connack) => resolve(new MqttDevice(client, connack)));
      client.once('error', (error) => {
        client.end(true);
        reject(error);
      });
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  on(topic: string | RegExp): DeviceMessage[] {
    return this.received.filter((message) => (typeof topic === 'string' ? message.topic === topic : topic.test(message.topic)));
  }

  waitFor(topic: string | RegExp, count = 1, timeoutMs = 5000): Promise<DeviceMessage[]> {
    return eventually(() => {
      const messages = this.on(topic);
      return messages.length >= count ? messages : undefined;
    }, timeoutMs, `${count} message(s) on ${String(topic)} at the MQTT.js device`);
  }

  waitClosed(timeoutMs = 5000): Promise<true> {
    return eventually(() => this.isClosed, timeoutMs, 'the gateway to close the MQTT.js device\'s connection');
  }

  /** Granted QoS per filter, as the SUBACK says (128: refused). */
  subscribe(filters: readonly string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
    // subscribeAsync rejects on a refused filter; the callback still hands over the SUBACK itself.
    return new Promise((resolve, reject) => {
      this.client.subscribe([...filters], { qos }, (error, _grants, packet) => {
        if (packet?.cmd === 'suback') resolve(packet.granted.map((grant) => (typeof grant === 'number' ? grant : -1)));
        else reject(error ?? new Error('no SUBACK'));
      });
    });
  }

  async end(): Promise<void> {
    await this.client.endAsync(true);
  }
}
