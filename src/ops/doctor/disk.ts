// Free space where state.dir lives: enough for outbox.maxBytes above outbox.minFreeDiskBytes.
import { statfsSync } from 'node:fs';
import { bytes } from '../words.js';
import type { Context } from './context.js';
import { describeFsError } from './permissions.js';
import type { Report } from './report.js';

export function checkDisk(report: Report, context: Context, existing: string): void {
  const { outbox } = context.config;
  let free: number;
  try {
    const stats = statfsSync(existing);
    free = stats.bavail * stats.bsize;
  } catch (error) {
    report.add('warn', 'disk', `cannot tell the free space at ${existing}: ${describeFsError(error)}`);
    return;
  }
  if (!outbox.enabled) {
    report.add('ok', 'disk', `${bytes(free)} free (outbox.enabled is false: nothing is stored)`);
    return;
  }
  if (free < outbox.minFreeDiskBytes) {
    report.add('FAIL', 'disk', `only ${bytes(free)} free where ${context.stateDir} lives, below outbox.minFreeDiskBytes (${bytes(outbox.minFreeDiskBytes)}): new readings are answered 5.03 instead of stored; free some space (logs: journalctl --vacuum-size=50M)`);
    return;
  }
  const held = context.outbox?.state === 'readable' ? context.outbox.fileBytes : 0;
  const room = free - outbox.minFreeDiskBytes + held;
  if (room < outbox.maxBytes) {
    report.add(
      'warn',
      'disk',
      `${bytes(free)} free: during a long outage the outbox can grow to only about ${bytes(room)} before readings are refused, not outbox.maxBytes (${bytes(outbox.maxBytes)}); free some space or lower outbox.maxBytes`,
    );
    return;
  }
  report.add('ok', 'disk', `${bytes(free)} free: room for outbox.maxBytes (${bytes(outbox.maxBytes)}) above outbox.minFreeDiskBytes (${bytes(outbox.minFreeDiskBytes)})`);
}
