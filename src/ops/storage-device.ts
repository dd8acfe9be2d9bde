// Which disk holds a directory, from Linux's sysfs: for doctor to say when state.dir is on an SD card or
// eMMC (the kernel names both mmcblkN), whose cells wear out from writes. Looks only, never writes.
//
// The path's st_dev is the file system's device number MAJ:MIN; /sys/dev/block/MAJ:MIN links to its
// directory in /sys/devices. A partition (mmcblk0p2) sits inside its disk's directory (mmcblk0) and has a
// `partition` file; a device-mapper or md device (LVM, LUKS, RAID: dm-0, md0) lists what it is built on
// in `slaves/`. File systems without a device of their own (tmpfs, overlay, btrfs, NFS) have major 0;
// /proc/self/mountinfo then gives their type and source.
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export interface SystemFiles {
  /** Where sysfs is mounted: /sys. */
  readonly sysRoot: string;
  /** The mount table: /proc/self/mountinfo. */
  readonly mountInfo: string;
}

export const LINUX_SYSTEM_FILES: SystemFiles = { sysRoot: '/sys', mountInfo: '/proc/self/mountinfo' };

export interface Disk {
  /** The kernel's name of a whole disk: mmcblk0, sda, nvme0n1, vda, loop0. */
  readonly name: string;
  /** From queue/rotational; undefined when the kernel does not say. Virtual disks often claim true. */
  readonly rotational: boolean | undefined;
}

export type Storage =
  /** `device` holds the file system (mmcblk0p2, dm-0); `disks` are the whole disks under it. */
  | { readonly kind: 'disk'; readonly path: string; readonly device: string; readonly disks: readonly Disk[] }
  /** tmpfs or ramfs: nothing reaches a disk, and nothing survives a restart. */
  | { readonly kind: 'memory'; readonly path: string; readonly fsType: string }
  /** No disk found: overlay, NFS, no sysfs (not Linux); `why` says which in a few words. */
  | { readonly kind: 'unknown'; readonly path: string; readonly fsType: string | undefined; readonly why: string };

/** SD cards and eMMC chips are both MMC block devices to Linux. */
export function isSdOrEmmc(disk: Disk): boolean {
  return /^mmcblk\d+$/.test(disk.name);
}

/** Major and minor of a Linux dev_t, each 32 bits (glibc's gnu_dev_major/minor: split around the low 20 bits for compatibility). */
export function deviceNumbers(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 32n) & 0xfffff000n) | ((dev >> 8n) & 0xfffn));
  const minor = Number(((dev >> 12n) & 0xffffff00n) | (dev & 0xffn));
  return { major, minor };
}

/** The storage holding `path`, or its nearest existing parent (state.dir may not exist yet). */
export function storageOf(path: string, system: SystemFiles = LINUX_SYSTEM_FILES): Storage {
  let existing = resolve(path);
  let dev: bigint;
  for (;;) {
    try {
      dev = statSync(existing, { bigint: true }).dev;
      break;
    } catch {
      if (existing === dirname(existing)) return { kind: 'unknown', path, fsType: undefined, why: 'no part of the path exists' };
      existing = dirname(existing);
    }
  }
  const { major, minor } = deviceNumbers(dev);
  return storageOfDevice(existing, major, minor, system);
}

/** The storage of a file system with device number major:minor, as sysfs and the mount table describe it. */
export function storageOfDevice(path: string, major: number, minor: number, system: SystemFiles): Storage {
  if (!existsSync(join(system.sysRoot, 'dev', 'block'))) return { kind: 'unknown', path, fsType: undefined, why: 'no /sys/dev/block (not Linux?)' };
  const mount = mountOf(`${major}:${minor}`, system.mountInfo);
  if (major !== 0) {
    const found = blockDevice(join(system.sysRoot, 'dev', 'block', `${major}:${minor}`), system);
    if (found) return { kind: 'disk', path, ...found };
    return { kind: 'unknown', path, fsType: mount?.fsType, why: `device ${major}:${minor} is not in /sys/dev/block` };
  }
  if (!mount) return { kind: 'unknown', path, fsType: undefined, why: `device ${major}:${minor} is not in the mount table` };
  if (mount.fsType === 'tmpfs' || mount.fsType === 'ramfs') return { kind: 'memory', path, fsType: mount.fsType };
  // btrfs and the like: no device number of their own, but the mount names the device.
  if (mount.source.startsWith('/dev/')) {
    const found = blockDevice(join(system.sysRoot, 'class', 'block', deviceName(mount.source)), system);
    if (found) return { kind: 'disk', path, ...found };
  }
  return { kind: 'unknown', path, fsType: mount.fsType, why: `${mount.fsType} file system${mount.source.startsWith('/') || mount.source.includes(':') ? ` from ${mount.source}` : ''}` };
}

/** The file system's device name, and the whole disks beneath it; undefined if sysfs does not know it. */
function blockDevice(link: string, system: SystemFiles): { device: string; disks: Disk[] } | undefined {
  let dir: string;
  try {
    dir = realpathSync(link);
  } catch {
    return undefined;
  }
  return { device: basename(dir), disks: disksUnder(dir, system, 0) };
}

/** LUKS on LVM on a partition is three levels; more means a loop in a damaged tree. */
const MAX_STACK_DEPTH = 8;

function disksUnder(dir: string, system: SystemFiles, depth: number): Disk[] {
  const disk = existsSync(join(dir, 'partition')) ? dirname(dir) : dir;
  const slaves = listDirectory(join(disk, 'slaves'));
  if (slaves.length === 0 || depth >= MAX_STACK_DEPTH) return [{ name: basename(disk), rotational: readRotational(disk) }];
  const disks: Disk[] = [];
  for (const slave of slaves) {
    let slaveDir: string;
    try {
      slaveDir = realpathSync(join(system.sysRoot, 'class', 'block', slave));
    } catch {
      continue;
    }
    for (const found of disksUnder(slaveDir, system, depth + 1)) if (!disks.some((known) => known.name === found.name)) disks.push(found);
  }
  return disks;
}

function readRotational(disk: string): boolean | undefined {
  try {
    const value = readFileSync(join(disk, 'queue', 'rotational'), 'utf8').trim();
    return value === '1' ? true : value === '0' ? false : undefined;
  } catch {
    return undefined;
  }
}

function listDirectory(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** /dev/mapper/cryptroot is a link to /dev/dm-0; sysfs knows only dm-0. */
function deviceName(source: string): string {
  try {
    return basename(realpathSync(source));
  } catch {
    return basename(source);
  }
}

/** The first mount of device `numbers` ("0:45") in a mountinfo file: its type and source. */
function mountOf(numbers: string, mountInfo: string): { fsType: string; source: string } | undefined {
  let text: string;
  try {
    text = readFileSync(mountInfo, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue" (proc(5)).
    const fields = line.split(' ');
    if (fields[2] !== numbers) continue;
    const separator = fields.indexOf('-', 6);
    if (separator < 0) continue;
    return { fsType: fields[separator + 1] ?? '', source: unescapeMountField(fields[separator + 2] ?? '') };
  }
  return undefined;
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (\040). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
