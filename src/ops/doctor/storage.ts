// doctor's "storage" line: which disk holds state.dir, whether it is an SD card or eMMC (they wear out
// from writes), and what the running gateway writes to it now, per day.
import type { OutboxConfig } from '../../config/load.js';
import { isSdOrEmmc, storageOf, type Disk, type Storage } from '../storage-device.js';
import { measureWriteRate, metricsWriteCounter, procWriteCounter, type WriteCounter, type WriteRate } from '../write-rate.js';
import { bytes, duration } from '../words.js';
import type { Context } from './context.js';
import type { Report } from './report.js';

/** Long enough to span a few of the outbox's commits and a WAL checkpoint, short enough to wait for. */
export const WRITE_SAMPLE_MS = 3000;

/**
 * Above this, doctor warns about an SD card or eMMC. A 32 GB card whose cells take ~1,000 rewrites
 * absorbs ~32 TB; small random writes are amplified by its erase blocks, often tenfold, so ~3 TB of ours.
 * At 1 GiB a day that is about eight years; at the 10 GB a day issue 20 measured for 100 sensors with
 * every reading stored, under one.
 */
const SD_WEAR_WARNING_BYTES_PER_DAY = 2 ** 30;
const SECONDS_PER_DAY = 86_400;

export type StorageFinding = { readonly status: 'ok' | 'warn'; readonly message: string };

export interface StorageCheckInput {
  readonly stateDir: string;
  readonly outbox: Pick<OutboxConfig, 'enabled' | 'mode'>;
  readonly runningPid: number | undefined;
  /** Where the running gateway serves /metrics, when http.enabled. */
  readonly metrics: { readonly host: string; readonly port: number } | undefined;
}

/**
 * Starts sampling the running gateway's writes at once, so that the wait overlaps doctor's other checks;
 * the returned promise settles within WRITE_SAMPLE_MS plus two reads.
 */
export function startWriteSample(input: StorageCheckInput): Promise<WriteRate | { readonly unknown: readonly string[] }> | undefined {
  if (input.runningPid === undefined) return undefined;
  const counters: WriteCounter[] = [procWriteCounter(input.runningPid)];
  if (input.metrics && input.metrics.port !== 0) counters.push(metricsWriteCounter(input.metrics.host, input.metrics.port));
  return measureWriteRate(counters, WRITE_SAMPLE_MS);
}

/** The storage line, once the write sample started at the beginning is in. */
export async function checkStorage(report: Report, context: Context): Promise<void> {
  const wear = storageFinding(context.storage, await context.writeSample);
  if (wear) report.add(wear.status, 'storage', wear.message);
}

/** The line, or undefined where the kernel cannot tell (no sysfs: not Linux). */
export function storageFinding(
  input: StorageCheckInput,
  sample: WriteRate | { readonly unknown: readonly string[] } | undefined,
  storage: Storage = storageOf(input.stateDir),
): StorageFinding | undefined {
  const dir = input.stateDir;
  switch (storage.kind) {
    case 'memory':
      if (!input.outbox.enabled) return { status: 'ok', message: `${dir} is in memory (${storage.fsType}): nothing is written to a disk` };
      return {
        status: 'warn',
        message: `${dir} is in memory (${storage.fsType}): readings the outbox holds while ThingsBoard is unreachable are lost if the box restarts or loses power before they are delivered, though their devices were told 2.01; put state.dir on a disk (such as /var/lib/coap2mqtt)`,
      };
    case 'unknown':
      if (storage.fsType === undefined && storage.why.startsWith('no /sys')) return undefined;
      return { status: 'ok', message: `cannot tell which disk holds ${dir} (${storage.why}); ${rateWords(input, sample)}` };
    case 'disk': {
      const sd = storage.disks.some(isSdOrEmmc);
      const rate = sample && 'bytesPerSecond' in sample ? sample.bytesPerSecond : undefined;
      const heavy = sd && rate !== undefined && rate * SECONDS_PER_DAY > SD_WEAR_WARNING_BYTES_PER_DAY;
      const advice = sd ? `; ${sdAdvice(input, heavy)}` : '';
      return { status: heavy ? 'warn' : 'ok', message: `${dir} is on ${deviceWords(storage.device, storage.disks)}: ${rateWords(input, sample)}${advice}` };
    }
  }
}

/** "mmcblk0 (SD card or eMMC)"; a stacked device (LVM, LUKS, RAID) with what it is built on: "dm-0 over mmcblk0 (...)". */
function deviceWords(device: string, disks: readonly Disk[]): string {
  const names = disks.map((disk) => `${disk.name}${diskKind(disk)}`).join(', ');
  const partitionOrWhole = disks.length === 1 && device.startsWith(disks[0]!.name);
  return partitionOrWhole ? names : `${device} over ${names || 'unknown disks'}`;
}

function diskKind(disk: Disk): string {
  if (isSdOrEmmc(disk)) return ' (SD card or eMMC)';
  if (/^nvme\d/.test(disk.name)) return ' (NVMe SSD)';
  if (/^sd[a-z]+$/.test(disk.name)) return ` (SATA or USB ${disk.rotational === false ? 'flash or SSD' : 'drive'})`;
  if (/^loop\d/.test(disk.name)) return ' (a loop device: a file on another disk)';
  return '';
}

function rateWords(input: StorageCheckInput, sample: WriteRate | { readonly unknown: readonly string[] } | undefined): string {
  if (input.runningPid === undefined || sample === undefined) return 'how much the gateway writes is unknown while it is not running (run doctor again while it runs)';
  const who = `the running gateway (pid ${input.runningPid})`;
  if ('unknown' in sample) return `how much ${who} writes is unknown: ${sample.unknown.join('; ')}`;
  const perSecond = Math.round(sample.bytesPerSecond);
  const perDay = Math.round(sample.bytesPerSecond * SECONDS_PER_DAY);
  const age = sample.startedAt === undefined ? undefined : Date.now() - sample.startedAt;
  const since = age === undefined ? 'since it started' : age < 60_000 ? 'since it started, under a minute ago' : `since it started ${duration(age)} ago`;
  return `${who} writes ${bytes(perSecond)}/s now, about ${bytes(perDay)} a day (${bytes(sample.totalBytes)} ${since})`;
}

function sdAdvice(input: StorageCheckInput, heavy: boolean): string {
  const { outbox } = input;
  if (!outbox.enabled) return 'outbox.enabled is false, so readings never touch the card';
  if (outbox.mode === 'always') {
    return 'outbox.mode "always" stores every reading on the card before sending it; "spill" (the default) writes readings only while ThingsBoard is unreachable or slow, and keeps the card\'s writes near zero while it answers';
  }
  if (heavy) {
    return 'outbox.mode "spill" writes readings only while ThingsBoard is unreachable or slow: check the upstream line, and coap2mqtt_outbox_readings_total{path="spilled"} on /metrics';
  }
  return 'outbox.mode "spill" keeps the card\'s writes near zero while ThingsBoard answers promptly';
}
