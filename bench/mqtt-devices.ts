// MQTT devices (issue 24's benchmark), against the real gateway (dist/cli.js with npm start's V8 flags, plus
// --expose-gc and bench/gateway-probe.js, which collects garbage and prints its memory on SIGUSR2):
//   1. memory per idle connection: 1,000 (--mqtt-connections) raw TCP connections, each CONNECTing with its
//      own device's token as username (keepalive 60 s, clean session), all CONNACKed; the gateway's RSS and
//      heap after a full GC, before and after (median of three samples each). Target: under 20 KB each.
//   2. QoS 1 telemetry through the gateway against the CoAP path in the same run, on one fresh gateway:
//      first the CoAP load generator (CON POST /api/v1/{token}/telemetry, --window in flight over --sockets
//      sockets), then --mqtt-publishers devices publishing {"t":1} on v1/devices/me/telemetry at QoS 1 with
//      the same --window in flight in all, each for --duration after a warm-up; answers (2.01 / PUBACK)
//      per second, the gateway's CPU time per 1,000 messages, and the bytes it wrote to disk
//      (/proc/PID/io write_bytes) per message. Target: MQTT at least half the CoAP path's throughput.
// Alone: npm run bench -- --targets mqtt-devices
import { connectMany, HOST, RawDevice } from './mqtt-client.js';
import { LoadGenerator, summarize, type LatencySummary, type RunResult } from './loadgen.js';
import { machineCpu, measureWhile, type Measured, type Usage } from './processes.js';
import { readIo } from './wear.js';
import type { ProbeSample } from './gateway-probe.js';
import { sleep } from '../test/helpers/ports.js';

export const PROBE_SIGNAL = 'SIGUSR2';
export const PROBE_LINE = /^bench-probe (\{.*\})$/;

/** Connections opened and closed before the first sample, so code compiled at the first one is not charged to each. */
const WARM_UP_CONNECTIONS = 32;
const SAMPLES = 3;
const SAMPLE_SPACING_MS = 500;
/** After the last CONNACK: presence announced upstream, its PUBACKs back, deferred frees done. */
const SETTLE_MS = 1000;
const tokenOf = (device: number): string => `tok-${device}`;

export interface MqttDevicesSettings {
  readonly connections: number;
  readonly publishers: number;
  /** Messages in flight in all, for either path. */
  readonly window: number;
  /** CoAP sockets and the device tokens their requests cycle through. */
  readonly sockets: number;
  readonly devices: number;
  readonly warmupS: number;
  readonly durationS: number;
  readonly timeoutS: number;
}

/** What the scenario needs of the bench harness (run.ts starts and tracks the processes). */
export interface MqttDevicesHarness {
  /** The built gateway with token devices tok-0 … tok-(devices-1), MQTT devices on, the probe preloaded; ready when connected upstream. */
  startGateway(devices: number): Promise<ProbedGateway>;
  readonly brokerPid: number;
}

export interface ProbedGateway {
  readonly pid: number;
  readonly coapPort: number;
  readonly mqttPort: number;
  /** Collects garbage in the gateway and reads its memory. */
  probe(): Promise<ProbeSample>;
  readonly notableLines: readonly string[];
  readonly notableCount: number;
  stop(): Promise<number | null>;
}

export interface IdleFigures {
  readonly connections: number;
  readonly before: ProbeSample;
  readonly after: ProbeSample;
  /** Once every connection has closed again: what the gateway gives back. */
  readonly afterClose: ProbeSample;
  readonly connectSeconds: number;
  readonly rssKBPerConnection: number;
  readonly heapUsedKBPerConnection: number;
  readonly heapTotalKBPerConnection: number;
  readonly externalKBPerConnection: number;
  readonly timersPerConnection: number;
}

export interface PathFigures {
  readonly path: 'coap' | 'mqtt';
  readonly messagesPerSecond: number;
  /** Answered (2.01 / PUBACK) in the measured run, the drain after it included. */
  readonly answered: number;
  readonly latencyMs: LatencySummary;
  readonly gatewayCpuPercent: number;
  readonly gatewayCpuMsPer1000: number;
  readonly usage: Record<string, Usage>;
  /** Machine CPU% (100 = one core) taken meanwhile by anything but the gateway, mosquitto and the load generator, and stolen by the hypervisor. */
  readonly othersCpuPercent: number;
  readonly stealPercent: number;
  readonly writeBytes: number;
  readonly writeBytesPerMessage: number;
  /** CoAP: lost or not 2.01; MQTT: connections the gateway closed. */
  readonly failures: number;
  readonly detail: string;
}

export interface MqttDevicesResult {
  readonly settings: MqttDevicesSettings;
  readonly idle: IdleFigures;
  readonly coap: PathFigures;
  readonly mqtt: PathFigures;
  readonly ratio: number;
  readonly exitCodes: readonly (number | null)[];
  readonly notableLogLines: readonly string[];
  readonly notableLogLineCount: number;
}

export async function runMqttDevices(
  harness: MqttDevicesHarness,
  settings: MqttDevicesSettings,
  progress: (line: string) => void,
): Promise<MqttDevicesResult> {
  const devices = Math.max(settings.devices, settings.connections + WARM_UP_CONNECTIONS, settings.publishers);
  const notable: string[] = [];
  let notableCount = 0;
  const exitCodes: Array<number | null> = [];
  const finish = async (gateway: ProbedGateway): Promise<void> => {
    exitCodes.push(await gateway.stop());
    notable.push(...gateway.notableLines);
    notableCount += gateway.notableCount;
  };

  progress(`mqtt-devices: ${settings.connections} idle MQTT connections… `);
  let gateway = await harness.startGateway(devices);
  let idle: IdleFigures;
  try {
    idle = await measureIdle(gateway, settings.connections);
  } finally {
    await finish(gateway);
  }
  progress(`${idle.rssKBPerConnection.toFixed(1)} KB RSS each\n`);

  gateway = await harness.startGateway(devices);
  let coap: PathFigures;
  let mqtt: PathFigures;
  try {
    progress(`mqtt-devices: CoAP path, window ${settings.window}, ${settings.durationS} s… `);
    coap = await measureCoap(gateway, harness.brokerPid, settings);
    progress(`${Math.round(coap.messagesPerSecond)} msg/s\n`);
    progress(`mqtt-devices: MQTT QoS 1, ${settings.publishers} devices, window ${settings.window}, ${settings.durationS} s… `);
    mqtt = await measureMqtt(gateway, harness.brokerPid, settings);
    progress(`${Math.round(mqtt.messagesPerSecond)} msg/s\n`);
  } finally {
    await finish(gateway);
  }
  return {
    settings,
    idle,
    coap,
    mqtt,
    ratio: mqtt.messagesPerSecond / coap.messagesPerSecond,
    exitCodes,
    notableLogLines: notable,
    notableLogLineCount: notableCount,
  };
}

async function measureIdle(gateway: ProbedGateway, count: number): Promise<IdleFigures> {
  // Tokens after the idle ones: a warm-up device is closed, and the gateway has let it go, before its turn.
  await closeAll(await connectDevices(gateway.mqttPort, WARM_UP_CONNECTIONS, count));
  await sleep(SETTLE_MS);
  const before = await settledSample(gateway);
  const connectStartedAt = performance.now();
  const devices = await connectDevices(gateway.mqttPort, count, 0);
  const connectSeconds = (performance.now() - connectStartedAt) / 1000;
  await sleep(SETTLE_MS);
  const after = await settledSample(gateway);
  const stillOpen = devices.filter((device) => device.open).length;
  if (stillOpen !== count) throw new Error(`mqtt-devices: the gateway closed ${count - stillOpen} of ${count} idle connections`);
  await closeAll(devices);
  await sleep(SETTLE_MS);
  const afterClose = await gateway.probe();
  const each = (field: keyof ProbeSample): number => (after[field] - before[field]) / 1024 / count;
  return {
    connections: count,
    before,
    after,
    afterClose,
    connectSeconds,
    rssKBPerConnection: each('rssBytes'),
    heapUsedKBPerConnection: each('heapUsedBytes'),
    heapTotalKBPerConnection: each('heapTotalBytes'),
    externalKBPerConnection: each('externalBytes'),
    timersPerConnection: (after.timers - before.timers) / count,
  };
}

/** The median of a few samples, field by field: one late GC or page reclaim does not make the figure. */
async function settledSample(gateway: ProbedGateway): Promise<ProbeSample> {
  const samples: ProbeSample[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    if (i > 0) await sleep(SAMPLE_SPACING_MS);
    samples.push(await gateway.probe());
  }
  const median = (field: keyof ProbeSample): number => samples.map((s) => s[field]).sort((a, b) => a - b)[Math.floor(SAMPLES / 2)]!;
  return {
    rssBytes: median('rssBytes'),
    heapUsedBytes: median('heapUsedBytes'),
    heapTotalBytes: median('heapTotalBytes'),
    externalBytes: median('externalBytes'),
    arrayBuffersBytes: median('arrayBuffersBytes'),
    timers: median('timers'),
    tcpHandles: median('tcpHandles'),
    gcMs: median('gcMs'),
  };
}

async function measureCoap(gateway: ProbedGateway, brokerPid: number, settings: MqttDevicesSettings): Promise<PathFigures> {
  const generator = await LoadGenerator.open({ host: HOST, port: gateway.coapPort, sockets: settings.sockets, devices: settings.devices });
  const mode = { kind: 'saturation', window: settings.window } as const;
  const timeoutMs = settings.timeoutS * 1000;
  try {
    await generator.runLoad({ mode, durationMs: settings.warmupS * 1000, timeoutMs });
    const { result: load, ...meter } = await metered(gateway, brokerPid, () => generator.runLoad({ mode, durationMs: settings.durationS * 1000, timeoutMs }));
    const created = load.codes['2.01'] ?? 0;
    return figures('coap', meter, load.throughput, created, load.latencyMs, load.sent - created, coapDetail(load));
  } finally {
    await generator.close();
  }
}

function coapDetail(load: RunResult): string {
  const other = Object.entries(load.codes).filter(([code]) => code !== '2.01');
  return [load.lost > 0 && `${load.lost} lost`, other.length > 0 && `codes ${JSON.stringify(load.codes)}`].filter(Boolean).join('; ');
}

async function measureMqtt(gateway: ProbedGateway, brokerPid: number, settings: MqttDevicesSettings): Promise<PathFigures> {
  const devices = await connectDevices(gateway.mqttPort, settings.publishers, 0);
  const load = new QosOneLoad(devices, settings.window);
  try {
    await load.run(settings.warmupS * 1000);
    const { result, ...meter } = await metered(gateway, brokerPid, () => load.run(settings.durationS * 1000));
    const closed = devices.filter((device) => !device.open).length;
    const detail = closed > 0 ? `the gateway closed ${closed} of ${devices.length} publishing connections` : '';
    return figures('mqtt', meter, result.perSecond, result.answered, result.latencyMs, closed, detail);
  } finally {
    await closeAll(devices);
  }
}

interface Meter {
  readonly usage: Record<string, Usage>;
  readonly othersCpuPercent: number;
  readonly stealPercent: number;
  readonly writeBytes: number;
}

/** `work` metered: CPU and RSS of the three processes, the rest of the machine's CPU, the gateway's disk writes. */
async function metered<T>(gateway: ProbedGateway, brokerPid: number, work: () => Promise<T>): Promise<Measured<T> & Meter> {
  const ioBefore = readIo(gateway.pid).writeBytes;
  const machineBefore = machineCpu();
  const startedAt = performance.now();
  const measured = await measureWhile({ coap2mqtt: gateway.pid, mosquitto: brokerPid, loadgen: process.pid }, work);
  const seconds = (performance.now() - startedAt) / 1000;
  const machineAfter = machineCpu();
  const ours = Object.values(measured.usage).reduce((sum, usage) => sum + usage.cpuPercent, 0);
  return {
    ...measured,
    othersCpuPercent: Math.max(0, ((machineAfter.busySeconds - machineBefore.busySeconds) * 100) / seconds - ours),
    stealPercent: ((machineAfter.stealSeconds - machineBefore.stealSeconds) * 100) / seconds,
    writeBytes: readIo(gateway.pid).writeBytes - ioBefore,
  };
}

function figures(
  path: PathFigures['path'],
  { usage, othersCpuPercent, stealPercent, writeBytes }: Meter,
  messagesPerSecond: number,
  answered: number,
  latencyMs: LatencySummary,
  failures: number,
  detail: string,
): PathFigures {
  const gatewayCpuPercent = usage.coap2mqtt!.cpuPercent;
  return {
    path,
    messagesPerSecond,
    answered,
    latencyMs,
    gatewayCpuPercent,
    // cpu% × 10 = CPU ms per second; over messages per second, per message; × 1,000.
    gatewayCpuMsPer1000: (gatewayCpuPercent * 10_000) / messagesPerSecond,
    usage,
    othersCpuPercent,
    stealPercent,
    writeBytes,
    writeBytesPerMessage: writeBytes / Math.max(1, answered),
    failures,
    detail,
  };
}

/** The gateway's devices tok-<first> …; the publishes answering one read's PUBACKs leave in one write: the load generator shares the cores. */
const connectDevices = (port: number, count: number, first: number): Promise<RawDevice[]> =>
  connectMany(port, count, first, tokenOf, { clientId: (token) => `bench-${token}`, batched: true });

async function closeAll(devices: readonly RawDevice[]): Promise<void> {
  await Promise.all(devices.map((device) => device.close()));
}

interface QosOneRun {
  readonly perSecond: number;
  readonly answered: number;
  readonly latencyMs: LatencySummary;
}

/** `window` QoS 1 publishes in flight over the devices; each PUBACK sends the next while the run lasts. */
class QosOneLoad {
  private publishing = false;
  private inFlight = 0;
  private answeredInPeriod = 0;
  private latencies: number[] = [];

  constructor(
    private readonly devices: readonly RawDevice[],
    private readonly window: number,
  ) {
    for (const device of devices) {
      device.onPacket = (packet) => {
        if (packet.cmd !== 'puback') return;
        this.inFlight--;
        this.latencies.push(performance.now() - device.sentAt[packet.messageId ?? 0]!);
        if (!this.publishing) return;
        this.answeredInPeriod++;
        this.inFlight++;
        device.publish();
      };
    }
  }

  async run(durationMs: number): Promise<QosOneRun> {
    this.latencies = [];
    this.answeredInPeriod = 0;
    this.publishing = true;
    // The window spread evenly: device i gets one more while i < window % devices.
    this.devices.forEach((device, i) => {
      const share = Math.floor(this.window / this.devices.length) + (i < this.window % this.devices.length ? 1 : 0);
      for (let n = 0; n < share; n++, this.inFlight++) device.publish();
    });
    const startedAt = performance.now();
    await sleep(durationMs);
    this.publishing = false;
    const perSecond = (this.answeredInPeriod * 1000) / (performance.now() - startedAt);
    for (let waited = 0; waited < 5000 && this.inFlight > 0 && this.devices.some((device) => device.open); waited += 20) await sleep(20);
    return { perSecond, answered: this.latencies.length, latencyMs: summarize(Float64Array.from(this.latencies)) };
  }
}
