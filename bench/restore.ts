// Issue 21's scenario (coap2mqtt-restore): Observe relations kept in state.dir/sessions.sqlite across a restart.
// N devices observe /rpc, each on its own UDP socket (ObserverFleet). Measured: the bytes the gateway writes
// (/proc/PID/io write_bytes) per registration, all at once and one at a time (further apart than the store's
// commits: each its own, as in the field; and 10 a second, sharing commits), and per deregistration; its RSS
// with N relations; then, after a SIGTERM and after a SIGKILL, the
// time from spawning it again to its "coap2mqtt started" line and to the last device hearing its
// confirmation (the devices' sockets stay open and ACK, as a real device does), and its RSS after the
// restore; then an RPC to every device, which proves the relations work. With a baseline build (the gateway
// before the issue), its RSS and writes with the same N relations, in the same run's conditions.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  ObserverFleet,
  type ConfirmationResult,
  type DeregistrationResult,
  type DeviceRange,
  type RegistrationResult,
  type RepliesResult,
  type RpcRoundResult,
} from './observe-fanout.js';
import { sampleProcess } from './processes.js';
import { readIo, type Io } from './wear.js';
import { freeUdpPort, sleep } from '../test/helpers/ports.js';

/** What the scenario needs of the bench harness (run.ts starts and tracks the processes). */
export interface RestoreHarness {
  readonly host: string;
  /** Removed by the harness at the end: state directories go here. */
  readonly scratchDir: string;
  /** The broker every gateway started here connects to. */
  readonly mqttUrl: string;
  /** A gateway with token devices dev-i / tok-i (i < devices); ready when listening and connected upstream. */
  startGateway(options: RestoreGatewayOptions): Promise<RestoreGateway>;
}

export interface RestoreGatewayOptions {
  readonly devices: number;
  /** CoAP UDP port: the same across a restart, as the devices' sockets are connected to it. */
  readonly port: number;
  /** state.dir: the same across a restart. */
  readonly stateDir: string;
  /** Another build's dist/cli.js; the harness's default when absent. */
  readonly cli?: string;
}

export interface RestoreGateway {
  readonly pid: number;
  /** performance.now() at spawn, and when its "coap2mqtt started" line was read (restore is over by then). */
  readonly spawnedAt: number;
  readonly startedAt: number;
  /** Its /metrics (V8 heap figures), if the HTTP server is on. */
  readonly metricsUrl: string | undefined;
  /** Its "device sessions restored" log line, or undefined if it never printed one. */
  readonly restoreLine: Promise<string | undefined>;
  readonly notableLines: readonly string[];
  readonly notableCount: number;
  /** SIGTERM (a clean stop) or SIGKILL (a crash); resolves with the exit code once it has gone. */
  stop(signal: 'SIGTERM' | 'SIGKILL'): Promise<number | null>;
}

export interface RestoreSettings {
  readonly observers: number;
  readonly observersPerSocket: number;
  /** Registrations one at a time, then as many deregistrations, at each pace. */
  readonly trickles: readonly Pace[];
  /** Per request, and for a fan-out. */
  readonly timeoutMs: number;
  /** The gateway before the issue, for its RSS and writes with the same relations. */
  readonly baselineCli: string | undefined;
}

export interface WriteFigure {
  readonly count: number;
  readonly writeBytes: number;
  readonly bytesEach: number;
  /** From the last request's answer until write_bytes stayed still for QUIET_MS. */
  readonly settledMs: number;
}

/**
 * Requests one at a time, each its own commit. The median step is one commit's own cost; the mean
 * (bytesEach) also carries the SQLite checkpoints (WAL pages copied into the database file, every ~1,000
 * pages) that happened to fall in the window, one of them perhaps still the batch's.
 */
/** Requests one at a time, each `spacingMs` after the previous answer. */
export interface Pace {
  readonly count: number;
  readonly spacingMs: number;
}

export interface Trickle extends Pace {
  readonly registration: RegistrationResult;
  readonly registrationWrites: TrickleWrites;
  readonly deregistration: DeregistrationResult;
  readonly deregistrationWrites: TrickleWrites;
}

export interface TrickleWrites extends WriteFigure {
  readonly medianStepBytes: number;
  readonly maxStepBytes: number;
  /** Steps of CHECKPOINT_STEP_BYTES or more, summed: checkpoints, most of it the batch's WAL. */
  readonly checkpointBytes: number;
}

/** The gateway's memory at one moment: RSS from /proc, the V8 heap and Buffers' memory from its /metrics. */
export interface Memory {
  readonly rssMB: number;
  /** NaN without /metrics. */
  readonly heapUsedMB: number;
  readonly externalMB: number;
}

/** The fields of the gateway's "device sessions restored" line. */
export interface RestoreLog {
  readonly restored: number;
  readonly refused: number;
  readonly dropped: number;
  readonly rpcs: number;
  readonly ms: number;
  /** Relations whose confirmation went out at start (newer builds log it). */
  readonly confirming?: number;
}

export interface RestartResult {
  readonly signal: 'SIGTERM' | 'SIGKILL';
  /** From the signal to the process gone. */
  readonly stopMs: number;
  readonly exitCode: number | null;
  /** Spawn → its "coap2mqtt started" line. */
  readonly startedMs: number;
  readonly restoreLog: RestoreLog | undefined;
  /** Times from spawn. */
  readonly confirmations: ConfirmationResult;
  /** Once every confirmation is in and the disk is quiet (at least a second later). */
  readonly memoryRestored: Memory;
  /** write_bytes from spawn until the confirmations are over and the disk quiet (the start's own files included). */
  readonly startWriteBytes: number;
  /** RPCs to every device after the restart, and their replies upstream. */
  readonly fanout: RpcRoundResult & RepliesResult;
}

export interface BaselineResult {
  readonly cli: string;
  readonly registration: RegistrationResult;
  readonly writes: WriteFigure;
  readonly memoryStarted: Memory;
  readonly memoryObserving: Memory;
  readonly exitCode: number | null;
  readonly log: GatewayLog;
}

/** A gateway's warning and error lines (stderr included). */
export interface GatewayLog {
  readonly run: string;
  readonly notableLogLines: readonly string[];
  readonly notableLogLineCount: number;
}

export interface RestoreResult {
  readonly observers: number;
  readonly observersPerSocket: number;
  readonly registration: RegistrationResult;
  /** All N registrations at once. */
  readonly batchWrites: WriteFigure;
  /** Registrations and deregistrations one at a time, at each pace. */
  readonly trickles: readonly Trickle[];
  /** Spawn → "coap2mqtt started" with nothing to restore (a fresh state.dir): what a restart costs anyway. */
  readonly firstStartedMs: number;
  readonly memoryStarted: Memory;
  /** Once the N registrations are written and the gateway quiet. */
  readonly memoryObserving: Memory;
  /** Just before the SIGTERM (the trickle came and went meanwhile). */
  readonly memoryBeforeRestart: Memory;
  readonly restarts: readonly RestartResult[];
  /** sessions.sqlite (and its WAL) after the last clean stop, with the N relations. */
  readonly sessionsFileBytes: number;
  readonly finalExitCode: number | null;
  /** One per gateway process: the first, then one per restart. */
  readonly logs: readonly GatewayLog[];
  readonly baseline: BaselineResult | undefined;
}

/** The target: every relation restored and confirmed within 2 s of the start. */
export const TARGET_MS = 2000;
/** The disk is taken as quiet (every commit and checkpoint done) once write_bytes has not moved for this long. */
const QUIET_MS = 1000;
const QUIET_LIMIT_MS = 30_000;
/** How long the devices wait for their confirmations after the restarted gateway is ready. */
const CONFIRMATION_WAIT_MS = 20_000;
/** One registration's commit writes a page or two; a step this large is a checkpoint (measured: 864 KB after 10,000 at once). */
const CHECKPOINT_STEP_BYTES = 64 * 1024;
/** Before reading RSS: the next GC, deferred frees. */
const SETTLE_MS = 1000;
const CONCURRENCY = 200;
/** The gateway's log line at the end of a restore (pino JSON). */
export const RESTORE_LOG_LINE = /^\{.*device sessions restored/;

export async function runRestore(harness: RestoreHarness, settings: RestoreSettings, progress: (line: string) => void): Promise<RestoreResult> {
  const { observers } = settings;
  // The devices after the N observers register and deregister one at a time.
  const extra = Math.max(0, ...settings.trickles.map((pace) => pace.count));
  const port = await freeUdpPort();
  const stateDir = join(harness.scratchDir, 'state-restore');
  const devices = observers + extra;
  const observing: DeviceRange = { start: 0, end: observers };
  const start = (): Promise<RestoreGateway> => harness.startGateway({ devices, port, stateDir });
  let gateway = await start();
  const fleet = await ObserverFleet.open({ ...fleetOptions(harness, settings, port), devices });
  let finalExitCode: number | null = null;
  try {
    await sleep(500);
    const memoryStarted = await memoryOf(gateway);
    progress(`coap2mqtt-restore: ${observers} devices register Observe on /rpc… `);
    const ioBefore = readIo(gateway.pid);
    const registration = await fleet.register(observing);
    const batchWrites = await writesSince(gateway.pid, ioBefore, registration.registered);
    const memoryObserving = await memoryOf(gateway);
    progress(`${Math.round(batchWrites.bytesEach)} B each\n`);
    const trickles: Trickle[] = [];
    for (const { count, spacingMs } of settings.trickles) {
      progress(`coap2mqtt-restore: ${count} register and deregister one at a time, ${spacingMs} ms apart… `);
      const paced = { start: observers, end: observers + count };
      const registering = await oneAtATime(gateway.pid, paced, spacingMs, async (single) => (await fleet.register(single)).registrationFailures);
      const deregistering = await oneAtATime(gateway.pid, paced, spacingMs, async (single) => (await fleet.deregister(single)).failures);
      trickles.push({
        count,
        spacingMs,
        registration: { registered: registering.succeeded, registrationFailures: registering.failures, registrationSeconds: registering.seconds },
        registrationWrites: registering.writes,
        deregistration: { deregistered: deregistering.succeeded, failures: deregistering.failures, seconds: deregistering.seconds },
        deregistrationWrites: deregistering.writes,
      });
      progress(`${Math.round(registering.writes.bytesEach)} B per registration, ${Math.round(deregistering.writes.bytesEach)} B per deregistration\n`);
    }
    await sleep(SETTLE_MS);
    const memoryBeforeRestart = await memoryOf(gateway);
    const firstStartedMs = gateway.startedAt - gateway.spawnedAt;
    const restarts: RestartResult[] = [];
    const runs: Array<[string, RestoreGateway]> = [['first start', gateway]];
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      progress(`coap2mqtt-restore: ${signal}, start again… `);
      const restarted = await restart(gateway, signal, start, fleet, observing);
      gateway = restarted.gateway;
      restarts.push(restarted.result);
      runs.push([`after ${signal}`, gateway]);
      const { confirmations, fanout } = restarted.result;
      progress(
        `${confirmations.confirmed}/${confirmations.expected} confirmed, the last ${ms(confirmations.latencyMs.max)} ms after spawn; ` +
          `an RPC to each: ${fanout.delivered} delivered\n`,
      );
    }
    finalExitCode = await gateway.stop('SIGTERM');
    const sessionsFileBytes = fileBytes(join(stateDir, 'sessions.sqlite')) + fileBytes(join(stateDir, 'sessions.sqlite-wal'));
    await fleet.close();
    const baseline = settings.baselineCli ? await measureBaseline(harness, settings, settings.baselineCli, devices, progress) : undefined;
    return {
      observers,
      observersPerSocket: settings.observersPerSocket,
      registration,
      batchWrites,
      trickles,
      firstStartedMs,
      memoryStarted,
      memoryObserving,
      memoryBeforeRestart,
      restarts,
      sessionsFileBytes,
      finalExitCode,
      logs: runs.map(([run, each]) => logOf(run, each)),
      baseline,
    };
  } finally {
    await fleet.close();
    await gateway.stop('SIGTERM');
  }
}

/** Stops the gateway with `signal`, starts it again on the same port and state, and waits for each device's confirmation. */
async function restart(
  gateway: RestoreGateway,
  signal: 'SIGTERM' | 'SIGKILL',
  start: () => Promise<RestoreGateway>,
  fleet: ObserverFleet,
  observing: DeviceRange,
): Promise<{ gateway: RestoreGateway; result: RestartResult }> {
  fleet.expectConfirmations(observing);
  const signalledAt = performance.now();
  const exitCode = await gateway.stop(signal);
  const stopMs = performance.now() - signalledAt;
  const next = await start();
  const confirmations = await fleet.awaitConfirmations(observing, CONFIRMATION_WAIT_MS, next.spawnedAt, TARGET_MS);
  const restoreLog = parseRestoreLog(await next.restoreLine);
  await quietWrites(next.pid);
  const startWriteBytes = readIo(next.pid).writeBytes;
  const memoryRestored = await memoryOf(next);
  const round = await fleet.fanOut(observing);
  const replies = await fleet.replyAll(observing);
  return {
    gateway: next,
    result: {
      signal,
      stopMs,
      exitCode,
      startedMs: next.startedAt - next.spawnedAt,
      restoreLog,
      confirmations,
      memoryRestored,
      startWriteBytes,
      fanout: { ...round, ...replies },
    },
  };
}

/** The build before the issue, the same devices registering at once: its RSS and writes with the same relations. */
async function measureBaseline(
  harness: RestoreHarness,
  settings: RestoreSettings,
  cli: string,
  devices: number,
  progress: (line: string) => void,
): Promise<BaselineResult> {
  progress(`coap2mqtt-restore: ${settings.observers} relations on the baseline build ${cli}… `);
  const port = await freeUdpPort();
  const gateway = await harness.startGateway({ devices, port, stateDir: join(harness.scratchDir, 'state-baseline'), cli });
  let exitCode: number | null = null;
  let fleet: ObserverFleet | undefined;
  try {
    fleet = await ObserverFleet.open({ ...fleetOptions(harness, settings, port), devices: settings.observers });
    await sleep(500);
    const memoryStarted = await memoryOf(gateway);
    const ioBefore = readIo(gateway.pid);
    const registration = await fleet.register();
    const writes = await writesSince(gateway.pid, ioBefore, registration.registered);
    const memoryObserving = await memoryOf(gateway);
    progress(`${memoryObserving.rssMB.toFixed(0)} MB\n`);
    await fleet.close();
    exitCode = await gateway.stop('SIGTERM');
    return { cli, registration, writes, memoryStarted, memoryObserving, exitCode, log: logOf('baseline', gateway) };
  } finally {
    await fleet?.close();
    await gateway.stop('SIGTERM');
  }
}

function fleetOptions(harness: RestoreHarness, settings: RestoreSettings, port: number) {
  return {
    host: harness.host,
    port,
    mqttUrl: harness.mqttUrl,
    devicesPerSocket: settings.observersPerSocket,
    concurrency: CONCURRENCY,
    timeoutMs: settings.timeoutMs,
  };
}

/**
 * One device's request at a time, each `spacingMs` after the previous answer (the commit, 50 ms later, is
 * done by then): write_bytes across each step, and in all once the disk has gone quiet.
 */
async function oneAtATime(
  pid: number,
  range: DeviceRange,
  spacingMs: number,
  request: (one: DeviceRange) => Promise<Record<string, number>>,
): Promise<{ succeeded: number; failures: Record<string, number>; seconds: number; writes: TrickleWrites }> {
  const failures: Record<string, number> = {};
  const steps: number[] = [];
  let succeeded = 0;
  const startedAt = performance.now();
  const before = readIo(pid);
  for (let index = range.start; index < range.end; index++) {
    const stepBefore = readIo(pid).writeBytes;
    const failed = Object.entries(await request({ start: index, end: index + 1 }));
    for (const [reason, count] of failed) failures[reason] = (failures[reason] ?? 0) + count;
    if (failed.length === 0) succeeded++;
    await sleep(spacingMs);
    steps.push(readIo(pid).writeBytes - stepBefore);
  }
  const seconds = (performance.now() - startedAt) / 1000;
  const writes = await writesSince(pid, before, succeeded);
  steps.sort((a, b) => a - b);
  return {
    succeeded,
    failures,
    seconds,
    writes: {
      ...writes,
      medianStepBytes: steps[Math.floor(steps.length / 2)] ?? NaN,
      maxStepBytes: steps.at(-1) ?? NaN,
      checkpointBytes: steps.filter((bytes) => bytes >= CHECKPOINT_STEP_BYTES).reduce((sum, bytes) => sum + bytes, 0),
    },
  };
}

/** What `count` requests made the gateway write since `before`, once its disk has gone quiet. */
async function writesSince(pid: number, before: Io, count: number): Promise<WriteFigure> {
  const startedAt = performance.now();
  const after = await quietWrites(pid);
  const writeBytes = after.writeBytes - before.writeBytes;
  return { count, writeBytes, bytesEach: writeBytes / Math.max(1, count), settledMs: performance.now() - startedAt - QUIET_MS };
}

/** Waits until write_bytes has not moved for QUIET_MS (at most QUIET_LIMIT_MS); at least QUIET_MS, so RSS read after it has settled too. */
async function quietWrites(pid: number): Promise<Io> {
  const giveUpAt = performance.now() + QUIET_LIMIT_MS;
  let last = readIo(pid);
  let stillSince = performance.now();
  while (performance.now() - stillSince < QUIET_MS && performance.now() < giveUpAt) {
    await sleep(100);
    const now = readIo(pid);
    if (now.writeBytes !== last.writeBytes) stillSince = performance.now();
    last = now;
  }
  return last;
}

function parseRestoreLog(line: string | undefined): RestoreLog | undefined {
  if (line === undefined) return undefined;
  try {
    const { restored, refused, dropped, rpcs, ms, confirming } = JSON.parse(line) as Record<string, unknown>;
    const numbers = { restored, refused, dropped, rpcs, ms };
    if (!Object.values(numbers).every((value) => typeof value === 'number')) return undefined;
    return { ...(numbers as Omit<RestoreLog, 'confirming'>), ...(typeof confirming === 'number' && { confirming }) };
  } catch {
    return undefined;
  }
}

const logOf = (run: string, gateway: RestoreGateway): GatewayLog => ({
  run,
  notableLogLines: gateway.notableLines,
  notableLogLineCount: gateway.notableCount,
});

async function memoryOf(gateway: RestoreGateway): Promise<Memory> {
  const rssMB = (sampleProcess(gateway.pid)?.rssBytes ?? NaN) / 2 ** 20;
  let metrics = '';
  try {
    if (gateway.metricsUrl) metrics = await (await fetch(gateway.metricsUrl)).text();
  } catch {
    // Reported as NaN.
  }
  const megabytes = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN) / 2 ** 20;
  return { rssMB, heapUsedMB: megabytes('nodejs_heap_size_used_bytes'), externalMB: megabytes('nodejs_external_memory_bytes') };
}

function fileBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

const ms = (value: number): string => (Number.isNaN(value) ? '-' : value.toFixed(0));
