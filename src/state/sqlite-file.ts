// What the gateway's SQLite files (the outbox, the session store) share about a file SQLite cannot read.
import { existsSync, renameSync } from 'node:fs';

/** SQLite's word for a file it cannot read as a database: set aside, never trusted, never deleted. */
export function isUnreadableDatabase(error: unknown, path: string): boolean {
  const code = (error as { code?: string }).code ?? '';
  return ['SQLITE_CORRUPT', 'SQLITE_NOTADB'].includes(code) && existsSync(path);
}

/**
 * Moves the database and its WAL and shared-memory files aside as `<path>.unreadable-<time>`, kept for
 * recovery by hand; returns the new name. A new file can then be made at `path`.
 */
export function moveAside(path: string): string {
  const aside = `${path}.unreadable-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  renameSync(path, aside);
  for (const suffix of ['-wal', '-shm']) if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
  return aside;
}
