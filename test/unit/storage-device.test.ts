// Which disk holds state.dir, on fake /sys trees shaped like a Raspberry Pi's (SD card), a PC's (SATA),
// LUKS on an SD card (device mapper) and a loop device, plus mount tables for tmpfs, btrfs and overlay.
// The test machine has no mmcblk: the trees are built in a temporary directory, with real symlinks as
// sysfs has them.
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deviceNumbers, isSdOrEmmc, storageOf, storageOfDevice, type SystemFiles } from '../../src/ops/storage-device.js';

const root = mkdtempSync(join(tmpdir(), 'coap2mqtt-sysfs-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const SD = 'devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0';
const SATA = 'devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda';
const DM = 'devices/virtual/block/dm-0';
const LOOP = 'devices/virtual/block/loop0';

let trees = 0;

/** A fresh fake system: sysfs with the four devices above, and a mount table. */
function fakeSystem(mountInfo = ''): SystemFiles {
  const sys = join(root, `tree-${trees++}`, 'sys');
  const file = (path: string, content: string): void => {
    mkdirSync(dirname(join(sys, path)), { recursive: true });
    writeFileSync(join(sys, path), content);
  };
  const link = (from: string, to: string): void => {
    mkdirSync(dirname(join(sys, from)), { recursive: true });
    symlinkSync(relative(dirname(join(sys, from)), join(sys, to)), join(sys, from));
  };
  const disk = (path: string, devNumbers: string, rotational: string): void => {
    file(`${path}/dev`, `${devNumbers}\n`);
    file(`${path}/queue/rotational`, `${rotational}\n`);
    link(`dev/block/${devNumbers}`, path);
    link(`class/block/${path.split('/').at(-1)}`, path);
  };
  const partition = (diskPath: string, name: string, devNumbers: string): void => {
    file(`${diskPath}/${name}/partition`, `${name.at(-1)}\n`);
    link(`dev/block/${devNumbers}`, `${diskPath}/${name}`);
    link(`class/block/${name}`, `${diskPath}/${name}`);
  };
  disk(SD, '179:0', '0');
  partition(SD, 'mmcblk0p1', '179:1');
  partition(SD, 'mmcblk0p2', '179:2');
  partition(SD, 'mmcblk0p3', '179:3');
  disk(SATA, '8:0', '1');
  partition(SATA, 'sda1', '8:1');
  // LUKS opened on the SD card's third partition.
  disk(DM, '253:0', '0');
  link(`${DM}/slaves/mmcblk0p3`, `${SD}/mmcblk0p3`);
  disk(LOOP, '7:0', '0');
  const proc = join(dirname(sys), 'mountinfo');
  writeFileSync(proc, mountInfo);
  return { sysRoot: sys, mountInfo: proc };
}

describe('storageOfDevice', () => {
  it('finds the SD card under a Raspberry Pi root partition (mmcblk0p2 -> mmcblk0)', () => {
    const storage = storageOfDevice('/var/lib/coap2mqtt', 179, 2, fakeSystem());
    expect(storage).toEqual({ kind: 'disk', path: '/var/lib/coap2mqtt', device: 'mmcblk0p2', disks: [{ name: 'mmcblk0', rotational: false }] });
    expect(storage.kind === 'disk' && storage.disks.some(isSdOrEmmc)).toBe(true);
  });

  it('finds a SATA disk under its partition (sda1 -> sda), which is no SD card', () => {
    const storage = storageOfDevice('/srv/state', 8, 1, fakeSystem());
    expect(storage).toEqual({ kind: 'disk', path: '/srv/state', device: 'sda1', disks: [{ name: 'sda', rotational: true }] });
    expect(storage.kind === 'disk' && storage.disks.some(isSdOrEmmc)).toBe(false);
  });

  it('follows a device-mapper device (LUKS, LVM) down to the SD card it is built on', () => {
    expect(storageOfDevice('/var/lib/coap2mqtt', 253, 0, fakeSystem())).toEqual({
      kind: 'disk',
      path: '/var/lib/coap2mqtt',
      device: 'dm-0',
      disks: [{ name: 'mmcblk0', rotational: false }],
    });
  });

  it('names a loop device as it is, and a whole disk without partitions', () => {
    const system = fakeSystem();
    expect(storageOfDevice('/mnt/image', 7, 0, system)).toEqual({ kind: 'disk', path: '/mnt/image', device: 'loop0', disks: [{ name: 'loop0', rotational: false }] });
    expect(storageOfDevice('/data', 179, 0, system)).toMatchObject({ device: 'mmcblk0', disks: [{ name: 'mmcblk0' }] });
  });

  it('says a tmpfs state directory is in memory', () => {
    const system = fakeSystem('25 1 0:23 / /run rw,nosuid,nodev - tmpfs tmpfs rw,size=400000k\n31 1 0:45 / /var/lib/coap2mqtt rw shared:12 - tmpfs tmpfs rw\n');
    expect(storageOfDevice('/var/lib/coap2mqtt', 0, 45, system)).toEqual({ kind: 'memory', path: '/var/lib/coap2mqtt', fsType: 'tmpfs' });
  });

  it('finds the disk of a file system without a device number of its own (btrfs) through the mount table', () => {
    const system = fakeSystem('29 1 0:32 / / rw,noatime shared:1 - btrfs /dev/mmcblk0p2 rw,ssd,space_cache=v2\n');
    expect(storageOfDevice('/var/lib/coap2mqtt', 0, 32, system)).toMatchObject({ kind: 'disk', device: 'mmcblk0p2', disks: [{ name: 'mmcblk0' }] });
  });

  it('cannot tell the disk under a container overlay, an unknown device or a box without sysfs, and says why', () => {
    const system = fakeSystem('612 560 0:58 / / rw,relatime master:310 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B\n');
    expect(storageOfDevice('/state', 0, 58, system)).toEqual({ kind: 'unknown', path: '/state', fsType: 'overlay', why: 'overlay file system' });
    expect(storageOfDevice('/state', 0, 99, system)).toMatchObject({ kind: 'unknown', why: 'device 0:99 is not in the mount table' });
    expect(storageOfDevice('/state', 8, 7, system)).toMatchObject({ kind: 'unknown', why: 'device 8:7 is not in /sys/dev/block' });
    expect(storageOfDevice('/state', 179, 2, { sysRoot: join(root, 'nowhere'), mountInfo: join(root, 'nowhere', 'mountinfo') })).toMatchObject({
      kind: 'unknown',
      why: 'no /sys/dev/block (not Linux?)',
    });
  });
});

describe('storageOf', () => {
  it('stats the directory, or its nearest existing parent, and looks up that device number', () => {
    const dir = mkdtempSync(join(root, 'state-'));
    const { major, minor } = deviceNumbers(statSync(dir, { bigint: true }).dev);
    // A fake tree in which the test machine's own device number is the SD card's partition.
    const system = fakeSystem();
    const path = `${SD}/mmcblk0p2`;
    rmSync(join(system.sysRoot, 'dev', 'block', '179:2'));
    symlinkSync(join(system.sysRoot, path), join(system.sysRoot, 'dev', 'block', `${major}:${minor}`));
    expect(storageOf(dir, system)).toMatchObject({ kind: 'disk', path: dir, device: 'mmcblk0p2', disks: [{ name: 'mmcblk0' }] });
    expect(storageOf(join(dir, 'not', 'yet'), system)).toMatchObject({ kind: 'disk', device: 'mmcblk0p2' });
  });
});

describe('deviceNumbers', () => {
  /** glibc's makedev. */
  const makedev = (major: number, minor: number): bigint =>
    ((BigInt(major) & 0xfffn) << 8n) | ((BigInt(major) & ~0xfffn) << 32n) | (BigInt(minor) & 0xffn) | ((BigInt(minor) & ~0xffn) << 12n);

  it('splits a dev_t as Linux encodes it, small and large numbers alike', () => {
    expect(deviceNumbers(65024n)).toEqual({ major: 254, minor: 0 });
    for (const [major, minor] of [[179, 2], [8, 17], [259, 3], [0, 45], [4095, 1_048_575], [300_000, 70_000]] as const) {
      expect(deviceNumbers(makedev(major, minor))).toEqual({ major, minor });
    }
  });
});
