// What the service's user may do with a file or directory, judged from modes and owners the way the kernel
// does; and file-system errors in words.
import { accessSync, constants, readdirSync, statSync, type Stats } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SystemAccounts, type SystemUser } from '../system-user.js';

export const accounts = new SystemAccounts();
export const userName = (uid: number): string | undefined => accounts.userName(uid);
export const groupName = (gid: number): string | undefined => accounts.groupName(gid);

export function currentUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '?');
  }
}

export function canAccess(user: SystemUser, stats: Stats, access: 'r' | 'w' | 'x'): boolean {
  const bits = access === 'r' ? [0o400, 0o040, 0o004] : access === 'w' ? [0o200, 0o020, 0o002] : [0o100, 0o010, 0o001];
  if (stats.uid === user.uid) return (stats.mode & bits[0]!) !== 0;
  if (user.groups.has(stats.gid)) return (stats.mode & bits[1]!) !== 0;
  return (stats.mode & bits[2]!) !== 0;
}

/** The first directory above `path` the user may not enter (no x permission), if any. */
export function closedDirectory(user: SystemUser, path: string): { dir: string; stats: Stats } | undefined {
  for (let dir = dirname(resolve(path)); ; dir = dirname(dir)) {
    try {
      const stats = statSync(dir);
      if (!canAccess(user, stats, 'x')) return { dir, stats };
    } catch {
      return undefined;
    }
    if (dir === dirname(dir)) return undefined;
  }
}

/** Writable by the service's user if known, else by whoever runs doctor. */
export function writable(path: string, stats: Stats, service: SystemUser | undefined): boolean {
  if (service) return canAccess(service, stats, 'w') && canAccess(service, stats, 'x') && closedDirectory(service, path) === undefined;
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Files in the state directory the service could not write: left by a gateway run as root, typically. */
export function filesServiceCannotWrite(dir: string, service: SystemUser): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((name) => {
    try {
      return !canAccess(service, statSync(join(dir, name)), 'w');
    } catch {
      return false;
    }
  });
}

export function nearestExisting(path: string): { path: string; stats: Stats } {
  for (let candidate = dirname(path); ; candidate = dirname(candidate)) {
    try {
      return { path: candidate, stats: statSync(candidate) };
    } catch {
      if (candidate === dirname(candidate)) throw new Error(`no part of ${path} exists`);
    }
  }
}

export function modeString(stats: Stats): string {
  return `0${(stats.mode & 0o777).toString(8)}`;
}

export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return `permission denied for user ${currentUserName()}`;
  if (code === 'EISDIR') return 'a directory, not a file';
  return (error as Error).message;
}
