// Paths in the configuration, checked the way the start will use them, so that `check-config` refuses
// what the start would (exit 2, not a restart every 10 s) and the start never waits on a path forever.
import { accessSync, constants, mkdirSync, statSync, statfsSync, type Stats } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { GatewayConfig } from './load.js';
import { shorten, showValue } from './shape.js';

/**
 * statfs(2) magic numbers of kernel pseudo file systems, which cannot hold files. Under /proc, mkdir
 * answers ENOENT for a directory that exists, and Node's recursive mkdir (state.dir) then retries the
 * parent and the child forever at 100% CPU, without a word: the start used to hang there.
 */
const PSEUDO_FILE_SYSTEMS = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0x1cd1, 'devpts'],
  [0xcafe4a11, 'bpf'],
  [0x62656570, 'configfs'],
  [0x6165676c, 'pstore'],
  [0xde5e81e4, 'efivarfs'],
  [0x19800202, 'mqueue'],
  [0x6e736673, 'nsfs'],
]);

/** The pseudo file system `path` (which exists) lies on, if it does. */
function pseudoFileSystem(path: string): string | undefined {
  try {
    return PSEUDO_FILE_SYSTEMS.get(Number(statfsSync(path).type));
  } catch {
    return undefined;
  }
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}

/** The closest existing ancestor of a missing `path` (a file, if the path runs through one). */
function nearestExisting(path: string): { path: string; stats: Stats } {
  for (let candidate = dirname(path); ; candidate = dirname(candidate)) {
    const stats = statOrUndefined(candidate);
    if (stats) return { path: candidate, stats };
    if (candidate === dirname(candidate)) throw new Error(`no part of ${path} exists`);
  }
}

function whoAmI(): string {
  try {
    return `user ${userInfo().username}`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

function canWrite(path: string): boolean {
  try {
    accessSync(path, constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function describeFsError(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENAMETOOLONG') return 'the path is too long';
  if (code === 'ELOOP') return 'too many symbolic links';
  if (code === 'EROFS') return 'read-only file system';
  return message.replace(/^\w+: /, '');
}

/**
 * Why the gateway could not keep its state in `dir` (creating it if missing), or undefined. Checked as
 * the user running this: the service's own when it starts, whoever runs `check-config` otherwise.
 */
export function directoryProblem(dir: string): string | undefined {
  if (dir.includes('\0')) return 'must not contain a NUL character';
  const absolute = resolve(dir);
  const shown = absolute === dir ? showValue(dir) : `${showValue(dir)} (here ${shorten(absolute)})`;
  const onDisk = (path: string): string | undefined => {
    const kind = pseudoFileSystem(path);
    return kind && `${shown} is on ${kind}, a kernel pseudo file system that cannot hold files; use a directory on a disk, e.g. "/var/lib/coap2mqtt"`;
  };
  try {
    const stats = statOrUndefined(absolute);
    if (stats) {
      if (!stats.isDirectory()) return `${shown} is not a directory; the gateway keeps its files in a directory, e.g. "/var/lib/coap2mqtt"`;
      return onDisk(absolute) ?? (canWrite(absolute) ? undefined : `${shown} is not writable by ${whoAmI()}; make it writable for the user the gateway runs as, or choose another directory`);
    }
    const ancestor = nearestExisting(absolute);
    const parent = shorten(ancestor.path);
    if (!ancestor.stats.isDirectory()) return `${shown} cannot be created: ${parent} is a file, not a directory`;
    return onDisk(ancestor.path) ?? (canWrite(ancestor.path) ? undefined : `${shown} cannot be created: ${parent} is not writable by ${whoAmI()}`);
  } catch (error) {
    return `${shown} cannot be used: ${describeFsError(error)}`;
  }
}

/**
 * Why a file read whole at start is not one to read, or undefined: a FIFO blocks until a writer comes,
 * /dev/zero never ends, and /proc/kmsg (a "regular file") blocks until the kernel logs something.
 */
export function notAFile(path: string, stats: Stats): string | undefined {
  if (!stats.isFile()) return 'not a regular file';
  const kind = pseudoFileSystem(path);
  return kind && `on ${kind}, a kernel pseudo file system, not a file on a disk`;
}

/** Why `path` cannot be read as a file at start, or undefined. */
export function readableFileProblem(path: string): string | undefined {
  if (path.includes('\0')) return 'must not contain a NUL character';
  try {
    const problem = notAFile(path, statSync(path));
    if (problem) return `${showValue(path)} is ${problem}`;
    accessSync(path, constants.R_OK);
    return undefined;
  } catch (error) {
    return `cannot read file ${showValue(path)}: ${describeFsError(error)}`;
  }
}

/**
 * mkdir -p without Node's recursive mkdir, which never returns where a parent exists but mkdir of the
 * child still answers ENOENT (procfs): one mkdir per missing directory, and the first error is final.
 */
export function createDirectories(dir: string): void {
  const absolute = resolve(dir);
  if (statOrUndefined(absolute)?.isDirectory()) return;
  const missing: string[] = [];
  for (let path = absolute; !statOrUndefined(path); path = dirname(path)) {
    missing.unshift(path);
    if (path === dirname(path)) break;
  }
  for (const path of missing) {
    try {
      mkdirSync(path);
    } catch (error) {
      // Another process may have made it meanwhile.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !statOrUndefined(path)?.isDirectory()) throw error;
    }
  }
}

/** The start's paths: errors for state.dir, which the start refuses; warnings for a firmware cache that will not work. */
export function checkStartPaths(config: GatewayConfig): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  const stateProblem = directoryProblem(config.state.dir);
  if (stateProblem) errors.push(`state.dir: ${stateProblem}`);
  const { cacheDir } = config.firmware;
  const cacheProblem = cacheDir === '' ? undefined : directoryProblem(cacheDir);
  if (cacheProblem) warnings.push(`firmware.cacheDir: ${cacheProblem}; package images are then kept in memory only`);
  return { errors, warnings };
}
