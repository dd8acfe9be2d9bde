// The devices file (devicesFile) as programs edit it: `coap2mqtt devices add/remove` and provisioning.
// Written atomically and keeping its owner and mode; a hand-edited JSON5 file is kept once as a backup
// before it is rewritten as plain JSON.
import { readFileSync } from 'node:fs';
import { backupFile, writeFileAtomic } from '../config/atomic-file.js';
import { readDevicesFile } from '../config/load.js';

/** The raw entries of the file; [] when it is missing. Throws with the loader's wording when it is unreadable. */
export function readDevicesFileEntries(path: string): unknown[] {
  const errors: string[] = [];
  const entries = readDevicesFile(path, errors);
  if (errors.length > 0) throw new Error(errors.join('; '));
  return entries;
}

/** Replaces the file's list; returns the backup's path when a hand-edited file was set aside first. */
export function writeDevicesFile(path: string, entries: readonly unknown[]): string | undefined {
  const backup = handEdited(path) ? backupFile(path) : undefined;
  writeFileAtomic(path, `${JSON.stringify(entries, null, 2)}\n`);
  return backup;
}

/** Comments or other JSON5 a technician wrote, which a rewrite as JSON would drop. */
function handEdited(path: string): boolean {
  try {
    JSON.parse(readFileSync(path, 'utf8'));
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === undefined;
  }
}

/** An entry's name, when it has one. */
export function entryName(entry: unknown): unknown {
  return entry !== null && typeof entry === 'object' ? (entry as { name?: unknown }).name : undefined;
}
