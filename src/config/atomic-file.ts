// Writing files a technician depends on (the configuration, the device list) so that a crash, a power cut
// or a full disk leaves either the old file or the new one, never half of each, and the file keeps its
// owner and permissions (it holds tokens and keys: root:coap2mqtt 0640 on an installed box).
import { closeSync, constants, copyFileSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync, fchownSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Replaces `path` with `text` atomically; a new file gets `mode` (default 0640). */
export function writeFileAtomic(path: string, text: string, mode = 0o640): void {
  let existing: { mode: number; uid: number; gid: number } | undefined;
  try {
    const stats = statSync(path);
    existing = { mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, existing?.mode ?? mode);
  try {
    try {
      // Root editing the service's file must not hand it to root: keep owner and group (only root may chown).
      if (existing && process.getuid?.() === 0) fchownSync(fd, existing.uid, existing.gid);
      const bytes = Buffer.from(text, 'utf8');
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    try {
      unlinkSync(temporary);
    } catch {
      // Already renamed or never created.
    }
    throw error;
  }
  syncDirectory(dirname(path));
}

/** A copy of `path` beside it, named `<name>.bak-<UTC time>`, with the same permissions; returns its path. */
export function backupFile(path: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let backup = `${path}.bak-${stamp}`;
  for (let n = 2; exists(backup); n++) backup = `${path}.bak-${stamp}-${n}`;
  copyFileSync(path, backup, constants.COPYFILE_EXCL);
  syncDirectory(dirname(path));
  return backup;
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The rename itself is durable only once the directory is synced. */
function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY);
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a directory; the rename has happened anyway.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
