// doctor's storage line for the boxes it meets: a Pi on its SD card writing little or much, with the
// outbox spilling or always writing, a gateway not running or not readable, a tmpfs state directory.
import { describe, expect, it } from 'vitest';
import { storageFinding, type StorageCheckInput } from '../../src/ops/doctor/storage.js';
import type { Storage } from '../../src/ops/storage-device.js';
import type { WriteRate } from '../../src/ops/write-rate.js';

const DIR = '/var/lib/coap2mqtt';
const sdCard: Storage = { kind: 'disk', path: DIR, device: 'mmcblk0p2', disks: [{ name: 'mmcblk0', rotational: false }] };
const running: StorageCheckInput = { stateDir: DIR, outbox: { enabled: true, mode: 'spill' }, runningPid: 812, metrics: { host: '127.0.0.1', port: 9464 } };
const stopped: StorageCheckInput = { ...running, runningPid: undefined };

/** A rate measured on a gateway started `ageMs` ago. */
const rate = (bytesPerSecond: number, totalBytes: number, ageMs = 2 * 86_400_000): WriteRate => ({
  source: '/proc/812/io',
  bytesPerSecond,
  totalBytes,
  startedAt: Date.now() - ageMs,
});

describe('storage finding', () => {
  it('names the SD card and what a quiet gateway writes a day, without a warning', () => {
    // 41 bytes/s is 3.4 MiB a day.
    expect(storageFinding(running, rate(41, 21_900_000), sdCard)).toEqual({
      status: 'ok',
      message: `${DIR} is on mmcblk0 (SD card or eMMC): the running gateway (pid 812) writes 41 bytes/s now, about 3.4 MiB a day (20.9 MiB since it started 2 days ago); outbox.mode "spill" keeps the card's writes near zero while ThingsBoard answers promptly`,
    });
  });

  it('warns when the gateway writes more than 1 GiB a day to an SD card, saying what outbox.mode does about it', () => {
    // 12 KiB/s is about 1 GiB a day: just over the line.
    const always = storageFinding({ ...running, outbox: { enabled: true, mode: 'always' } }, rate(121_140, 44_000_000_000), sdCard);
    expect(always).toEqual({
      status: 'warn',
      message: `${DIR} is on mmcblk0 (SD card or eMMC): the running gateway (pid 812) writes 118.3 KiB/s now, about 9.7 GiB a day (41.0 GiB since it started 2 days ago); outbox.mode "always" stores every reading on the card before sending it; "spill" (the default) writes readings only while ThingsBoard is unreachable or slow, and keeps the card's writes near zero while it answers`,
    });
    const spilling = storageFinding(running, rate(12_500, 500_000_000, 30_000), sdCard);
    expect(spilling?.status).toBe('warn');
    expect(spilling?.message).toMatch(
      /writes 12\.2 KiB\/s now, about 1\.0 GiB a day \(476\.8 MiB since it started, under a minute ago\); outbox\.mode "spill" writes readings only while ThingsBoard is unreachable or slow: check the upstream line, and coap2mqtt_outbox_readings_total\{path="spilled"\} on \/metrics$/,
    );
    expect(storageFinding(running, rate(12_000, 1_000), sdCard)?.status).toBe('ok');
  });

  it('does not warn about the write rate on a disk that is no SD card', () => {
    const sata: Storage = { kind: 'disk', path: DIR, device: 'sda1', disks: [{ name: 'sda', rotational: true }] };
    expect(storageFinding(running, rate(121_140, 1_000_000), sata)).toEqual({
      status: 'ok',
      message: `${DIR} is on sda (SATA or USB drive): the running gateway (pid 812) writes 118.3 KiB/s now, about 9.7 GiB a day (976.6 KiB since it started 2 days ago)`,
    });
  });

  it('names what a stacked device is built on', () => {
    const luks: Storage = { kind: 'disk', path: DIR, device: 'dm-0', disks: [{ name: 'mmcblk0', rotational: false }] };
    expect(storageFinding(stopped, undefined, luks)?.message).toMatch(new RegExp(`^${DIR} is on dm-0 over mmcblk0 \\(SD card or eMMC\\): `));
  });

  it('says the rate is unknown while the gateway is not running, or when its counter cannot be read, and why', () => {
    expect(storageFinding(stopped, undefined, sdCard)?.message).toBe(
      `${DIR} is on mmcblk0 (SD card or eMMC): how much the gateway writes is unknown while it is not running (run doctor again while it runs); outbox.mode "spill" keeps the card's writes near zero while ThingsBoard answers promptly`,
    );
    const unreadable = storageFinding(running, { unknown: ['/proc/812/io is the service\'s own (run doctor with sudo to read it)', 'http://127.0.0.1:9464/metrics: connection refused'] }, sdCard);
    expect(unreadable).toEqual({
      status: 'ok',
      message: `${DIR} is on mmcblk0 (SD card or eMMC): how much the running gateway (pid 812) writes is unknown: /proc/812/io is the service's own (run doctor with sudo to read it); http://127.0.0.1:9464/metrics: connection refused; outbox.mode "spill" keeps the card's writes near zero while ThingsBoard answers promptly`,
    });
  });

  it('warns that a state directory in memory loses the outbox at a restart; says nothing where the kernel cannot tell', () => {
    const tmpfs: Storage = { kind: 'memory', path: DIR, fsType: 'tmpfs' };
    expect(storageFinding(running, undefined, tmpfs)?.status).toBe('warn');
    expect(storageFinding(running, undefined, tmpfs)?.message).toMatch(/^\/var\/lib\/coap2mqtt is in memory \(tmpfs\): readings the outbox holds .* are lost if the box restarts/);
    expect(storageFinding({ ...running, outbox: { enabled: false, mode: 'spill' } }, undefined, tmpfs)).toEqual({
      status: 'ok',
      message: `${DIR} is in memory (tmpfs): nothing is written to a disk`,
    });
    expect(storageFinding(running, undefined, { kind: 'unknown', path: DIR, fsType: undefined, why: 'no /sys/dev/block (not Linux?)' })).toBeUndefined();
    expect(storageFinding(stopped, undefined, { kind: 'unknown', path: DIR, fsType: 'overlay', why: 'overlay file system' })).toEqual({
      status: 'ok',
      message: `cannot tell which disk holds ${DIR} (overlay file system); how much the gateway writes is unknown while it is not running (run doctor again while it runs)`,
    });
  });
});
