import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { assignmentFrom, assignmentKeys, describePackage, packageKey, packageKindsTouched, type PackageAssignment } from '../../src/firmware/assignment.js';
import { checksumMatches, computeChecksum, parseChecksumAlgorithm } from '../../src/firmware/checksum.js';
import { FirmwareImageStore, type FirmwareStoreOptions } from '../../src/firmware/image-store.js';
import { createLogger } from '../../src/log.js';

const hello = Buffer.from('hello');
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('checksums as ThingsBoard writes them', () => {
  it('reads algorithm names loosely', () => {
    expect(parseChecksumAlgorithm('SHA256')).toBe('SHA256');
    expect(parseChecksumAlgorithm('sha-256')).toBe('SHA256');
    expect(parseChecksumAlgorithm('murmur3_128')).toBe('MURMUR3_128');
    expect(parseChecksumAlgorithm('SHA1')).toBeUndefined();
  });

  it('digests are lower-case hex, compared without regard to case', () => {
    expect(computeChecksum('MD5', hello)).toEqual(['5d41402abc4b2a76b9719d911017c592']);
    expect(checksumMatches('MD5', '5D41402ABC4B2A76B9719D911017C592', hello)).toBe(true);
    expect(checksumMatches('SHA256', sha256(hello), hello)).toBe(true);
    expect(checksumMatches('SHA384', createHash('sha384').update(hello).digest('hex'), hello)).toBe(true);
    expect(checksumMatches('SHA512', createHash('sha512').update(hello).digest('hex'), hello)).toBe(true);
    expect(checksumMatches('SHA256', sha256(Buffer.from('hellO')), hello)).toBe(false);
  });

  it('CRC32 as Long.toHexString (no leading zeros) and as older Guava little-endian hex', () => {
    expect(crc32(hello)).toBe(0x3610a686);
    expect(checksumMatches('CRC32', '3610a686', hello)).toBe(true);
    expect(checksumMatches('CRC32', '86a61036', hello)).toBe(true);
    // A CRC below 0x10000000 loses its leading zero in Java's rendering.
    const data = Array.from({ length: 5000 }, (_, i) => Buffer.from(String(i))).find((candidate) => crc32(candidate) < 0x10000000)!;
    const rendered = crc32(data).toString(16);
    expect(rendered.length).toBeLessThan(8);
    expect(checksumMatches('CRC32', rendered, data)).toBe(true);
    expect(checksumMatches('CRC32', rendered.padStart(8, '0'), data)).toBe(true);
    expect(checksumMatches('CRC32', '3610a687', hello)).toBe(false);
  });

  it('MurmurHash3 as Guava hex and as current ThingsBoard\'s lossy Base64', () => {
    // Guava: Hashing.murmur3_32().hashBytes("hello") → 47fa8b24; murmur3_128 → 029bbd41b3a7d8cb191dae486a901e5b.
    expect(checksumMatches('MURMUR3_32', '47fa8b24', hello)).toBe(true);
    expect(checksumMatches('MURMUR3_128', '029bbd41b3a7d8cb191dae486a901e5b', hello)).toBe(true);
    // Base64(new String(bytes).getBytes()): 0xfa and 0x8b are malformed UTF-8, each becoming U+FFFD.
    expect(checksumMatches('MURMUR3_32', 'R++/ve+/vSQ=', hello)).toBe(true);
    expect(checksumMatches('MURMUR3_32', Buffer.from('47fa8b24', 'hex').toString('base64'), hello)).toBe(true);
    expect(checksumMatches('MURMUR3_32', '47fa8b25', hello)).toBe(false);
  });
});

describe('package assignments', () => {
  it('reads fw_* and sw_* attributes; a number version is text', () => {
    const attributes = { fw_title: 'boiler', fw_version: 1.2, fw_size: 4096, fw_checksum_algorithm: 'SHA256', fw_checksum: 'ab', sw_title: 'app' };
    expect(assignmentFrom('fw', attributes)).toEqual({
      kind: 'fw',
      title: 'boiler',
      version: '1.2',
      size: 4096,
      checksumAlgorithm: 'SHA256',
      checksum: 'ab',
      url: undefined,
    });
    expect(assignmentFrom('sw', attributes)).toBeUndefined();
    expect(assignmentKeys('sw')).toEqual(['sw_title', 'sw_version', 'sw_size', 'sw_checksum_algorithm', 'sw_checksum', 'sw_url']);
    expect(packageKindsTouched(['fw_url', 'setpoint'])).toEqual(['fw']);
    expect(packageKindsTouched(['setpoint'])).toEqual([]);
  });

  it('names one image by package identity, whichever device has it', () => {
    const a = assignmentFrom('fw', { fw_title: 't', fw_version: '1', fw_checksum: 'aa' })!;
    expect(packageKey(a)).toBe(packageKey({ ...a }));
    expect(packageKey(a)).not.toBe(packageKey({ ...a, checksum: 'bb' }));
    expect(packageKey(a)).toMatch(/^[0-9a-f]{32}$/);
    expect(describePackage(a)).toBe('firmware "t" version "1"');
  });
});

describe('FirmwareImageStore', () => {
  const log = createLogger('silent');
  let work: string;
  let http: Server;
  let base: string;
  const served = new Map<string, Buffer>();
  let requests: string[] = [];
  let delayMs = 0;
  let stores: FirmwareImageStore[] = [];

  beforeAll(async () => {
    http = createServer((request, response) => {
      requests.push(request.url ?? '');
      const body = served.get(request.url ?? '');
      setTimeout(() => (body ? response.writeHead(200, { 'content-length': body.length }).end(body) : response.writeHead(404).end()), delayMs);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((resolve) => http.close(resolve)));
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), 'coap2mqtt-images-'));
    requests = [];
    delayMs = 0;
    served.clear();
  });
  afterEach(() => {
    for (const store of stores) store.stop();
    stores = [];
    rmSync(work, { recursive: true, force: true });
  });

  function store(options: Partial<FirmwareStoreOptions> = {}, now?: () => number): FirmwareImageStore {
    const created = new FirmwareImageStore(
      {
        sources: ['dir', 'url', 'thingsboard'],
        dir: '',
        thingsboardUrl: base,
        cacheDir: join(work, 'cache'),
        cacheMaxBytes: 1024 * 1024,
        maxImageBytes: 64 * 1024,
        fetchTimeoutMs: 5000,
        requireChecksum: true,
        ...options,
      },
      log,
      fetch,
      now,
    );
    stores.push(created);
    return created;
  }

  const packageOf = (data: Buffer, extra: Partial<PackageAssignment> = {}): PackageAssignment => ({
    kind: 'fw',
    title: 'fw',
    version: '1',
    size: data.length,
    checksumAlgorithm: 'SHA256',
    checksum: sha256(data),
    url: undefined,
    ...extra,
  });
  const device = { token: 'device-token', deviceName: 'Boiler-7' };

  it('downloads with the device\'s token once for concurrent asks, and keeps the image on disk', async () => {
    const image = randomBytes(10_000);
    served.set('/api/v1/device-token/firmware?title=fw&version=1', image);
    delayMs = 100;
    const images = store();
    const [a, b] = await Promise.all([images.get(packageOf(image), device), images.get(packageOf(image), { token: 'other', deviceName: 'Pump-2' })]);
    expect(a.status).toBe('ready');
    expect(b).toEqual(a);
    if (a.status !== 'ready') return;
    expect(a.image.data.equals(image)).toBe(true);
    expect(a.image.etag).toHaveLength(8);
    expect(requests).toHaveLength(1);
    expect(images.stats()).toMatchObject({ fetches: 1, fetchFailures: 0, refused: 0, memoryImages: 1, memoryBytes: 10_000 });

    // After a restart: from the disk cache, checked again, not downloaded.
    const restarted = store();
    const again = await restarted.get(packageOf(image), device);
    expect(again.status === 'ready' && again.image.data.equals(image)).toBe(true);
    expect(requests).toHaveLength(1);
  });

  it('downloads again when the cached file is damaged', async () => {
    const image = randomBytes(3000);
    served.set('/img.bin', image);
    const assignment = packageOf(image, { url: `${base}/img.bin` });
    expect((await store().get(assignment, device)).status).toBe('ready');
    const [file] = readdirSync(join(work, 'cache'));
    const damaged = Buffer.from(image);
    damaged[5] = damaged[5]! ^ 1;
    writeFileSync(join(work, 'cache', file!), damaged);
    const outcome = await store().get(assignment, device);
    expect(outcome.status === 'ready' && outcome.image.data.equals(image)).toBe(true);
    expect(requests).toEqual(['/img.bin', '/img.bin']);
    expect(readFileSync(join(work, 'cache', file!)).equals(image)).toBe(true);
  });

  it('refuses a wrong checksum or size, remembers it for a while, and tries again later', async () => {
    let now = 1_000_000;
    const image = randomBytes(2000);
    served.set('/bad.bin', randomBytes(2000));
    const images = store({}, () => now);
    const assignment = packageOf(image, { url: `${base}/bad.bin` });
    const refused = await images.get(assignment, { token: undefined, deviceName: 'Pump-2' });
    expect(refused).toEqual({ status: 'refused', reason: expect.stringMatching(/does not match its SHA256 checksum/) });
    expect(await images.get(assignment, device)).toEqual(refused);
    expect(requests).toEqual(['/bad.bin']);
    expect(existsSync(join(work, 'cache')) ? readdirSync(join(work, 'cache')) : []).toEqual([]);
    now += 6 * 60_000;
    served.set('/bad.bin', image);
    expect((await images.get(assignment, device)).status).toBe('ready');

    const short = await store().get(packageOf(image, { size: 1999, url: `${base}/bad.bin` }), { token: undefined, deviceName: 'Pump-2' });
    expect(short).toEqual({ status: 'refused', reason: expect.stringMatching(/is 2000 bytes, but fw_size says 1999/) });
    expect(images.stats().refused).toBe(1);
  });

  it('tries the next source when one has the wrong bytes or none', async () => {
    const image = randomBytes(1500);
    const dir = join(work, 'images');
    mkdirSync(join(dir, 'fw'), { recursive: true });
    writeFileSync(join(dir, 'fw', '1'), randomBytes(1500));
    served.set('/good.bin', image);
    const outcome = await store({ dir }).get(packageOf(image, { url: `${base}/good.bin` }), device);
    expect(outcome.status === 'ready' && outcome.image.data.equals(image)).toBe(true);
  });

  it('reads <dir>/<title>-<version>.bin and never looks outside firmware.dir', async () => {
    const image = randomBytes(800);
    const dir = join(work, 'images');
    mkdirSync(dir);
    writeFileSync(join(dir, 'fw-1.bin'), image);
    const images = store({ dir, thingsboardUrl: '' });
    const outcome = await images.get(packageOf(image), device);
    expect(outcome.status === 'ready' && outcome.image.data.equals(image)).toBe(true);
    const escaping = await images.get(packageOf(image, { title: '..', version: 'etc' }), device);
    expect(escaping).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/path separator/) });
  });

  it('answers unavailable with a retry time when no source has the image, refused when none applies', async () => {
    let now = 5_000_000;
    const images = store({ thingsboardUrl: '' }, () => now);
    const image = randomBytes(100);
    const missing = await images.get(packageOf(image, { url: `${base}/nothing.bin` }), device);
    expect(missing).toEqual({ status: 'unavailable', reason: expect.stringMatching(/404 Not Found/), retryAfterSeconds: 30 });
    now += 10_000;
    expect(await images.get(packageOf(image, { url: `${base}/nothing.bin` }), device)).toMatchObject({ status: 'unavailable', retryAfterSeconds: 20 });
    expect(requests).toHaveLength(1);
    expect(await images.get(packageOf(image, { version: '2' }), device)).toEqual({ status: 'refused', reason: expect.stringMatching(/no firmware source applies/) });
  });

  it('refuses images above maxImageBytes without reading them whole, and unverifiable packages', async () => {
    served.set('/huge.bin', randomBytes(70 * 1024));
    const images = store();
    const huge = await images.get(packageOf(Buffer.alloc(1), { size: undefined, url: `${base}/huge.bin` }), device);
    expect(huge).toEqual({ status: 'refused', reason: expect.stringMatching(/above firmware.maxImageBytes \(65536\)/) });
    const unverified = packageOf(Buffer.alloc(1), { checksum: undefined, url: `${base}/huge.bin` });
    expect(await images.get(unverified, device)).toEqual({ status: 'refused', reason: expect.stringMatching(/no fw_checksum.*requireChecksum false/) });
    expect(await images.get(packageOf(Buffer.alloc(1), { checksumAlgorithm: 'SHA1' }), device)).toEqual({
      status: 'refused',
      reason: expect.stringMatching(/"SHA1" is not one of MD5, SHA256/),
    });
  });

  it('serves an unverified package when firmware.requireChecksum is false', async () => {
    const image = randomBytes(300);
    served.set('/plain.bin', image);
    const outcome = await store({ requireChecksum: false }).get(packageOf(image, { checksum: undefined, url: `${base}/plain.bin` }), device);
    expect(outcome.status === 'ready' && outcome.image.data.equals(image)).toBe(true);
  });

  it('keeps the disk cache within cacheMaxBytes, deleting the least recently used image', async () => {
    const images = store({ cacheMaxBytes: 25_000 });
    const packages = [1, 2, 3].map((n) => {
      const image = randomBytes(10_000);
      served.set(`/p${n}.bin`, image);
      return packageOf(image, { version: String(n), url: `${base}/p${n}.bin` });
    });
    for (const [index, assignment] of packages.slice(0, 2).entries()) {
      expect((await images.get(assignment, device)).status).toBe('ready');
      // Older use first: mtimes one minute apart.
      const when = new Date(Date.now() - (2 - index) * 60_000);
      utimesSync(join(work, 'cache', `${packageKey(assignment)}.bin`), when, when);
    }
    expect((await images.get(packages[2]!, device)).status).toBe('ready');
    expect(readdirSync(join(work, 'cache')).sort()).toEqual([packageKey(packages[1]!), packageKey(packages[2]!)].map((key) => `${key}.bin`).sort());
  });

  it('serves from memory when the cache directory cannot be written (full disk, read-only)', async () => {
    const image = randomBytes(500);
    served.set('/ro.bin', image);
    writeFileSync(join(work, 'cache'), 'a file where the directory should be');
    const images = store();
    const outcome = await images.get(packageOf(image, { url: `${base}/ro.bin` }), device);
    expect(outcome.status === 'ready' && outcome.image.data.equals(image)).toBe(true);
    expect((await images.get(packageOf(image, { url: `${base}/ro.bin` }), device)).status).toBe('ready');
    expect(requests).toHaveLength(1);
  });

  it('gives up a download after fetchTimeoutMs and on stop', async () => {
    const image = randomBytes(100);
    served.set('/slow.bin', image);
    delayMs = 2000;
    const timed = await store({ fetchTimeoutMs: 200 }).get(packageOf(image, { url: `${base}/slow.bin` }), device);
    expect(timed).toMatchObject({ status: 'unavailable', reason: expect.stringMatching(/longer than firmware.fetchTimeoutMs \(200 ms\)/) });
    const images = store();
    const pending = images.get(packageOf(image, { version: '2', url: `${base}/slow.bin` }), device);
    images.stop();
    expect(await pending).toMatchObject({ status: 'unavailable' });
  });
});
