// Which library for the device-facing MQTT listener (ThingsBoard's MQTT device API: the access token as
// username, QoS 1 publishes on v1/devices/me/telemetry): aedes, or mqtt-packet's parser and generator with a
// minimal connection handler of our own over `net`. Each server runs in a child process of its own (so its
// RSS is its own), with the V8 flags of `npm start` plus --expose-gc; this process is the devices:
//   1. memory per idle connection: GC, RSS; 1,000 connections (CONNECT keepalive 60 s, clean session, a
//      token as username) all CONNACKed; GC, RSS again. Also the heap (used + external) and the timers the
//      server holds (process.getActiveResourcesInfo()), per connection.
//   2. QoS 1 throughput: 20 connections each publishing {"t":1} on v1/devices/me/telemetry, 10 in flight each,
//      for 5 s (after 1 s of warm-up); PUBACKs received per second.
//   3. the server's CPU time (process.cpuUsage) per 1,000 messages over those 5 s.
// Alone, not part of `npm run bench`:
//   npx tsc -p bench/tsconfig.json && node --expose-gc dist-bench/bench/mqtt-server-choice.js
// Results go to the terminal and to bench/results/mqtt-server-choice.json (git-ignored, as all results).
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aedes } from 'aedes';
import { generate, parser, type Packet } from 'mqtt-packet';
import { sleep } from '../test/helpers/ports.js';
import { connectMany, HOST, KEEPALIVE_S, RawDevice } from './mqtt-client.js';

const HERE = fileURLToPath(new URL('.', import.meta.url)); // dist-bench/bench/
const ROOT = resolve(HERE, '../..');
/**
 * mqtt-packet-corked: the same minimal server, its socket corked while a read is parsed, so the PUBACKs of one
 * read leave in one write, as aedes's do (mqtt-packet's writeToStream, which aedes uses, corks until nextTick).
 */
const SERVER_KINDS = ['aedes', 'mqtt-packet', 'mqtt-packet-corked'] as const;
type ServerKind = (typeof SERVER_KINDS)[number];

const IDLE_CONNECTIONS = 1000;
const PUBLISHERS = 20;
const WINDOW = 10;
const WARMUP_MS = 1000;
const MEASURE_MS = 5000;
const tokenOf = (i: number): string => `bench-token-${i}`;
/** Every connection of every phase has its own token, as devices do. */
const TOKEN_COUNT = 2 * PUBLISHERS + 2 * IDLE_CONNECTIONS;

// The listener will live in the gateway, so the servers run with its V8 flags (package.json's start script).
const GATEWAY_NODE_FLAGS = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start
  .split(/\s+/)
  .filter((word) => word.startsWith('--'));

interface ServerSample {
  readonly rssBytes: number;
  readonly heapBytes: number;
  /** V8's heap as committed (heapTotal): young-generation growth shows here, not in heapBytes. */
  readonly heapCommittedBytes: number;
  readonly cpuMicros: number;
  readonly timers: number;
  readonly connections: number;
}
type ToServer = { readonly kind: 'sample'; readonly gc: boolean };
type FromServer = { readonly kind: 'ready'; readonly port: number } | ({ readonly kind: 'sample' } & ServerSample);

// ---------------------------------------------------------------------------------------------------------
// The servers (child process).

async function aedesServer(tokens: ReadonlySet<string>): Promise<net.Server> {
  const broker = await Aedes.createBroker({
    authenticate: (_client, username, _password, done) => done(null, username !== undefined && tokens.has(username)),
  });
  return net.createServer({ noDelay: true }, broker.handle);
}

const CONNACK_ACCEPTED = generate({ cmd: 'connack', returnCode: 0, sessionPresent: false });
const CONNACK_BAD_CREDENTIALS = generate({ cmd: 'connack', returnCode: 4, sessionPresent: false });
const PINGRESP = generate({ cmd: 'pingresp' });

/** CONNACK (after a token check, as aedes's authenticate), PUBACK at once, PINGRESP; nothing else, no keepalive timer. */
function mqttPacketServer(tokens: ReadonlySet<string>, corked: boolean): net.Server {
  return net.createServer({ noDelay: true }, (socket) => {
    const packets = parser();
    packets.on('packet', (packet: Packet) => {
      switch (packet.cmd) {
        case 'connect':
          socket.write(packet.username !== undefined && tokens.has(packet.username) ? CONNACK_ACCEPTED : CONNACK_BAD_CREDENTIALS);
          break;
        case 'publish':
          if (packet.qos === 1) socket.write(generate({ cmd: 'puback', messageId: packet.messageId }));
          break;
        case 'pingreq':
          socket.write(PINGRESP);
          break;
        case 'disconnect':
          socket.end();
          break;
        default:
          break;
      }
    });
    packets.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      if (corked) socket.cork();
      packets.parse(chunk);
      if (corked) socket.uncork();
    });
    socket.on('error', () => socket.destroy());
  });
}

async function sampleServer(server: net.Server, collect: boolean): Promise<ServerSample> {
  if (collect) {
    // Twice, a turn apart: the first lets finalizers and weak callbacks run, the second collects what they freed.
    globalThis.gc?.();
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc?.();
  }
  const memory = process.memoryUsage();
  const cpu = process.cpuUsage();
  const connections = await new Promise<number>((resolve) => server.getConnections((_error, count) => resolve(count)));
  return {
    rssBytes: memory.rss,
    heapBytes: memory.heapUsed + memory.external,
    heapCommittedBytes: memory.heapTotal,
    cpuMicros: cpu.user + cpu.system,
    timers: process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length,
    connections,
  };
}

async function serve(kind: ServerKind): Promise<void> {
  if (globalThis.gc === undefined) throw new Error('the server needs --expose-gc');
  const tokens = new Set(Array.from({ length: TOKEN_COUNT }, (_, i) => tokenOf(i)));
  const server = kind === 'aedes' ? await aedesServer(tokens) : mqttPacketServer(tokens, kind === 'mqtt-packet-corked');
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const reply = (message: FromServer): void => void process.send!(message);
  process.on('message', (message: ToServer) => void sampleServer(server, message.gc).then((sample) => reply({ kind: 'sample', ...sample })));
  process.once('disconnect', () => process.exit(0)); // the harness has gone: so does the server
  reply({ kind: 'ready', port: (server.address() as net.AddressInfo).port });
}

// ---------------------------------------------------------------------------------------------------------
// The harness (parent process).

class ServerChild {
  private readonly waiting: Array<(sample: ServerSample) => void> = [];

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.on('message', (message: FromServer) => {
      if (message.kind === 'sample') this.waiting.shift()?.(message);
    });
  }

  static async start(kind: ServerKind): Promise<ServerChild> {
    const child = fork(fileURLToPath(import.meta.url), ['--serve', kind], {
      execArgv: [...GATEWAY_NODE_FLAGS, '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the ${kind} server exited (${code}) before it was ready`)));
      child.once('message', (message: FromServer) => {
        if (message.kind === 'ready') resolve(message.port);
      });
    });
    return new ServerChild(child, port);
  }

  /** Samples are answered in the order asked. */
  sample(collect: boolean): Promise<ServerSample> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.child.send({ kind: 'sample', gc: collect } satisfies ToServer);
    });
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}

const connectDevices = (port: number, count: number, first: number): Promise<RawDevice[]> => connectMany(port, count, first, tokenOf);

/** Waits (up to 10 s) until the server has dropped every connection, so the next phase starts clean. */
async function closeAll(server: ServerChild, devices: readonly RawDevice[]): Promise<void> {
  for (const device of devices) void device.close();
  for (let waited = 0; waited < 10_000 && (await server.sample(false)).connections > 0; waited += 50) await sleep(50);
}

interface IdleResult {
  readonly rssKBPerConnection: number;
  readonly heapKBPerConnection: number;
  readonly heapCommittedKBPerConnection: number;
  readonly timersPerConnection: number;
  readonly rssBeforeMB: number;
  readonly rssAfterMB: number;
}

async function measureIdle(server: ServerChild): Promise<IdleResult> {
  // A few connections first, so code loaded and compiled at the first one is not counted per connection.
  await closeAll(server, await connectDevices(server.port, PUBLISHERS, 0));
  const before = await server.sample(true);
  const devices = await connectDevices(server.port, IDLE_CONNECTIONS, PUBLISHERS);
  await sleep(500); // whatever the server does after its CONNACK (aedes: $SYS notices, persistence) settles
  const after = await server.sample(true);
  await closeAll(server, devices);
  const perConnection = (bytes: number): number => bytes / 1024 / IDLE_CONNECTIONS;
  return {
    rssKBPerConnection: perConnection(after.rssBytes - before.rssBytes),
    heapKBPerConnection: perConnection(after.heapBytes - before.heapBytes),
    heapCommittedKBPerConnection: perConnection(after.heapCommittedBytes - before.heapCommittedBytes),
    timersPerConnection: (after.timers - before.timers) / IDLE_CONNECTIONS,
    rssBeforeMB: before.rssBytes / 2 ** 20,
    rssAfterMB: after.rssBytes / 2 ** 20,
  };
}

interface ThroughputResult {
  /** Whether each device wrote the publishes answering one read together (see RawDevice.batched). */
  readonly devicesBatched: boolean;
  readonly messagesPerSecond: number;
  readonly serverCpuMsPer1000: number;
  readonly serverCpuPercent: number;
  /** This process (the devices): near 100 means the figure is the load generator's limit, not the server's. */
  readonly loadgenCpuPercent: number;
}

async function measureThroughput(server: ServerChild, devicesBatched: boolean): Promise<ThroughputResult> {
  const devices = await connectDevices(server.port, PUBLISHERS, PUBLISHERS + IDLE_CONNECTIONS);
  let acknowledged = 0;
  let inFlight = 0;
  let publishing = true;
  for (const device of devices) {
    device.batched = devicesBatched;
    device.onPacket = (packet) => {
      if (packet.cmd !== 'puback') return;
      acknowledged++;
      inFlight--;
      if (publishing) {
        inFlight++;
        device.publish();
      }
    };
    for (let i = 0; i < WINDOW; i++, inFlight++) device.publish();
  }
  await sleep(WARMUP_MS);
  const [serverBefore, ackedBefore, startedAt, loadgenBefore] = [await server.sample(false), acknowledged, performance.now(), process.cpuUsage()];
  await sleep(MEASURE_MS);
  const [serverAfter, ackedAfter, endedAt, loadgen] = [await server.sample(false), acknowledged, performance.now(), process.cpuUsage(loadgenBefore)];
  publishing = false;
  for (let waited = 0; waited < 5000 && inFlight > 0; waited += 20) await sleep(20);
  if (inFlight > 0) throw new Error(`${inFlight} publish(es) never acknowledged`);
  await closeAll(server, devices);
  const messages = ackedAfter - ackedBefore;
  const elapsedMicros = (endedAt - startedAt) * 1000;
  const serverMicros = serverAfter.cpuMicros - serverBefore.cpuMicros;
  return {
    devicesBatched,
    messagesPerSecond: messages / (elapsedMicros / 1e6),
    serverCpuMsPer1000: serverMicros / 1000 / (messages / 1000),
    serverCpuPercent: (100 * serverMicros) / elapsedMicros,
    loadgenCpuPercent: (100 * (loadgen.user + loadgen.system)) / elapsedMicros,
  };
}

interface ServerResult {
  readonly server: string;
  readonly idle: IdleResult;
  readonly throughput: readonly ThroughputResult[];
}

async function measure(kind: ServerKind): Promise<ServerResult> {
  const server = await ServerChild.start(kind);
  try {
    const idle = await measureIdle(server);
    const throughput = [await measureThroughput(server, false), await measureThroughput(server, true)];
    return { server: `${kind} ${packageVersion(kind === 'aedes' ? 'aedes' : 'mqtt-packet')}`, idle, throughput };
  } finally {
    await server.stop();
  }
}

function packageVersion(name: string): string {
  return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}

function printTables(results: readonly ServerResult[]): void {
  const idle = formatTable(
    ['server', 'RSS KB/conn', 'heap KB/conn', 'V8 committed KB/conn', 'timers/conn', 'RSS before MB', 'RSS after MB'],
    results.map(({ server, idle: r }) => [
      server,
      r.rssKBPerConnection.toFixed(1),
      r.heapKBPerConnection.toFixed(1),
      r.heapCommittedKBPerConnection.toFixed(1),
      r.timersPerConnection.toFixed(2),
      r.rssBeforeMB.toFixed(1),
      r.rssAfterMB.toFixed(1),
    ]),
  );
  const throughput = formatTable(
    ['server', 'device writes', 'QoS1 msg/s', 'server CPU ms/1000 msg', 'server CPU%', 'loadgen CPU%'],
    results.flatMap(({ server, throughput: runs }) =>
      runs.map((r) => [
        server,
        r.devicesBatched ? 'batched' : 'one per publish',
        r.messagesPerSecond.toFixed(0),
        r.serverCpuMsPer1000.toFixed(1),
        r.serverCpuPercent.toFixed(0),
        r.loadgenCpuPercent.toFixed(0),
      ]),
    ),
  );
  process.stdout.write(
    `${IDLE_CONNECTIONS} idle connections (keepalive ${KEEPALIVE_S} s, clean session), after GC:\n${idle}\n\n` +
      `${PUBLISHERS} publishers × ${WINDOW} in flight, QoS 1, ${MEASURE_MS / 1000} s:\n${throughput}\n`,
  );
}

async function main(): Promise<void> {
  const results: ServerResult[] = [];
  for (const kind of SERVER_KINDS) results.push(await measure(kind));
  printTables(results);
  const cpus = os.cpus();
  const machine = { date: new Date().toISOString(), cpus: cpus.length, cpuModel: cpus[0]?.model, node: process.version };
  const directory = join(ROOT, 'bench', 'results');
  mkdirSync(directory, { recursive: true });
  const file = join(directory, 'mqtt-server-choice.json');
  writeFileSync(file, `${JSON.stringify({ machine, nodeFlags: GATEWAY_NODE_FLAGS, results }, null, 2)}\n`);
  process.stdout.write(`results: ${file}\n`);
}

const serveIndex = process.argv.indexOf('--serve');
const servedKind = serveIndex >= 0 ? process.argv[serveIndex + 1] : undefined;
if (servedKind !== undefined && !(SERVER_KINDS as readonly string[]).includes(servedKind)) {
  process.stderr.write(`--serve: unknown server "${servedKind}"; known: ${SERVER_KINDS.join(', ')}\n`);
  process.exit(2);
}
(servedKind === undefined ? main() : serve(servedKind as ServerKind)).catch((error: unknown) => {
  process.stderr.write(`mqtt-server-choice failed: ${(error as Error).stack}\n`);
  process.exit(1);
});
