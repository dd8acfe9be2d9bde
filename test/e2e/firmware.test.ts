// OTA packages for CoAP devices (docs/device-api-coap.md): ThingsBoard (a double on a real mosquitto) assigns a
// package by pushing fw_* / sw_* shared attributes; libcoap's coap-client downloads it block-wise from the
// gateway, which fetched the image once from a real HTTP server (standing in for ThingsBoard's HTTP API
// and for fw_url hosts) or a local directory, and checked it against fw_checksum first.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const work = mkdtempSync(join(tmpdir(), 'coap2mqtt-firmware-'));
const imagesDir = join(work, 'images');
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** What the HTTP server hands out, by path (with query), and every request it saw. */
const served = new Map<string, Buffer>();
const httpRequests: string[] = [];
let httpDelayMs = 0;
let http: Server;
let httpBase: string;

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gw: TestGateway;
/** ThingsBoard's view of the devices' shared attributes: pushed and answered alike. */
const attributes: Record<string, { shared: Record<string, unknown> }> = {};

/** As ThingsBoard assigns a package: the keys it no longer has are deleted first, then the new ones pushed. */
async function assign(device: string, kind: 'fw' | 'sw', values: Record<string, unknown>): Promise<void> {
  const data = Object.fromEntries(Object.entries(values).map(([key, value]) => [`${kind}_${key}`, value]));
  const gone = ['title', 'version', 'size', 'checksum_algorithm', 'checksum', 'url'].map((field) => `${kind}_${field}`).filter((key) => !(key in data));
  const shared = { ...attributes[device]?.shared };
  for (const key of gone) delete shared[key];
  attributes[device] = { shared: { ...shared, ...data } };
  await tb.publish('v1/gateway/attributes', { device, data: { deleted: gone } });
  await tb.publish('v1/gateway/attributes', { device, data });
}

function download(path: string, blockSize: number, file: string) {
  return coapClient(gw.uri(path), ['-m', 'get', '-b', String(blockSize), '-o', file]);
}

beforeAll(async () => {
  mkdirSync(imagesDir);
  http = createServer((request, response) => {
    httpRequests.push(request.url ?? '');
    const body = served.get(request.url ?? '');
    setTimeout(() => {
      if (!body) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
    }, httpDelayMs);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  httpBase = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  tb.answerAttributeRequests(attributes);
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-token' },
    sessions: { attributeRequestTimeoutMs: 1000 },
    firmware: { thingsboardUrl: httpBase, dir: imagesDir },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
  await new Promise((resolve) => http?.close(resolve));
  rmSync(work, { recursive: true, force: true });
});

beforeEach(() => {
  httpRequests.length = 0;
  httpDelayMs = 0;
  tb.clear();
});

describe('firmware download over Block2', () => {
  it('serves the image ThingsBoard\'s HTTP API gives for the device\'s token, 64-byte blocks hashing to fw_checksum', async () => {
    const image = randomBytes(5000);
    served.set('/api/v1/boiler-token-7/firmware?title=boiler-fw&version=1.2.0', image);
    await assign('Boiler-7', 'fw', { title: 'boiler-fw', version: '1.2.0', size: image.length, checksum_algorithm: 'SHA256', checksum: sha256(image) });

    const file = join(work, 'boiler-64.bin');
    const result = await download('/api/v1/boiler-token-7/firmware?title=boiler-fw&version=1.2.0', 64, file);
    expect(result.response?.code).toBe('2.05');
    expect(sha256(readFileSync(file))).toBe(sha256(image));
    // 5000 bytes in 64-byte blocks: 79 responses, each a Block2 of the same ETag.
    const blocks = result.messages.filter((message) => message.code === '2.05');
    expect(blocks).toHaveLength(79);
    expect(new Set(blocks.map((block) => block.options.get('ETag')?.[0])).size).toBe(1);

    // The done-when command: /fw/TOKEN in 256-byte blocks. Fetched once for all of it.
    const again = join(work, 'boiler-256.bin');
    expect((await download('/fw/boiler-token-7?title=boiler-fw&version=1.2.0', 256, again)).response?.code).toBe('2.05');
    expect(sha256(readFileSync(again))).toBe(sha256(image));
    expect(httpRequests.filter((url) => url.startsWith('/api/v1/boiler-token-7/firmware'))).toHaveLength(1);

    // The device reports its progress as telemetry, which passes through like any other.
    const state = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"fw_state":"DOWNLOADED"}']);
    expect(state.response?.code).toBe('2.01');
    const [reading] = await tb.waitForReadings('Boiler-7', 1);
    expect((reading as { values: unknown }).values).toEqual({ fw_state: 'DOWNLOADED' });
  });

  it('serves one chunk when asked with size and chunk', async () => {
    const image = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    served.set('/api/v1/boiler-token-7/firmware?title=chunked&version=1', image);
    await assign('Boiler-7', 'fw', { title: 'chunked', version: '1', checksum_algorithm: 'MD5', checksum: createHash('md5').update(image).digest('hex') });
    const file = join(work, 'chunk.bin');
    const result = await download('/fw/boiler-token-7?title=chunked&version=1&size=100&chunk=2', 1024, file);
    expect(result.response?.code).toBe('2.05');
    expect(readFileSync(file).equals(image.subarray(200, 300))).toBe(true);
  });

  it('downloads for two devices at once cause one fetch from the source (fw_url)', async () => {
    const image = randomBytes(3000);
    served.set('/images/shared.bin', image);
    // Slow enough that both requests find the download (started by the push) still going, quick enough
    // to be answered within the piggyback window.
    httpDelayMs = 200;
    for (const device of ['Boiler-7', 'Pump-2']) {
      await assign(device, 'fw', { title: 'common', version: '7', url: `${httpBase}/images/shared.bin`, checksum_algorithm: 'SHA256', checksum: sha256(image) });
    }
    const [a, b] = await Promise.all([
      download('/fw/boiler-token-7?title=common&version=7', 128, join(work, 'a.bin')),
      download('/fw/pump-token-2?title=common&version=7', 128, join(work, 'b.bin')),
    ]);
    expect([a.response?.code, b.response?.code]).toEqual(['2.05', '2.05']);
    expect(sha256(readFileSync(join(work, 'a.bin')))).toBe(sha256(image));
    expect(sha256(readFileSync(join(work, 'b.bin')))).toBe(sha256(image));
    expect(httpRequests.filter((url) => url === '/images/shared.bin')).toHaveLength(1);
  });

  it('answers 5.03 with Max-Age while a slow source is still downloading, then serves the image', async () => {
    const image = randomBytes(4000);
    served.set('/images/slow.bin', image);
    httpDelayMs = 1500;
    await assign('Pump-2', 'fw', { title: 'slow', version: '1', url: `${httpBase}/images/slow.bin`, checksum_algorithm: 'SHA256', checksum: sha256(image) });
    // Not a separate response: a Block2 transfer starting with a separate CON is lost by older libcoap.
    const early = await download('/fw/pump-token-2?title=slow&version=1', 256, join(work, 'slow.bin'));
    expect(early.response?.code).toBe('5.03');
    expect(early.response?.type).toBe('ACK');
    expect(early.response?.options.get('Max-Age')).toEqual(['10']);
    await eventually(() => gw.logs.some((line) => line.msg === 'package image fetched and verified' && String(line.package).includes('"slow"')), 5000, 'the download');
    const later = await download('/fw/pump-token-2?title=slow&version=1', 256, join(work, 'slow.bin'));
    expect(later.response?.code).toBe('2.05');
    expect(sha256(readFileSync(join(work, 'slow.bin')))).toBe(sha256(image));
    expect(httpRequests.filter((url) => url === '/images/slow.bin')).toHaveLength(1);
  });

  it('refuses a source image that does not match fw_checksum (5.02) and keeps nothing of it', async () => {
    const good = randomBytes(2000);
    const corrupted = Buffer.from(good);
    corrupted[1000] = corrupted[1000]! ^ 0xff;
    served.set('/images/corrupt.bin', corrupted);
    await assign('Pump-2', 'fw', { title: 'pump-fw', version: '3', url: `${httpBase}/images/corrupt.bin`, checksum_algorithm: 'SHA256', checksum: sha256(good) });
    const file = join(work, 'corrupt.bin');
    expect((await download('/fw/pump-token-2?title=pump-fw&version=3', 64, file)).response?.code).toBe('5.02');
    const cached = readdirSync(join(gw.gateway.stateDir, 'firmware')).map((name) => readFileSync(join(gw.gateway.stateDir, 'firmware', name)));
    expect(cached.some((bytes) => bytes.equals(corrupted))).toBe(false);
    // A fleet asking again does not fetch the bad image again and again. (Without -b: coap-client reads
    // only the first block of an error answer, and the diagnostic is longer than 64 bytes.)
    const again = await coapClient(gw.uri('/fw/pump-token-2?title=pump-fw&version=3'), ['-m', 'get']);
    expect(again.response?.code).toBe('5.02');
    expect(again.response?.payload).toMatch(/does not match its SHA256 checksum/);
    expect(httpRequests.filter((url) => url === '/images/corrupt.bin')).toHaveLength(1);
  });

  it('answers 4.00 for another title or version, naming the assigned one', async () => {
    served.set('/images/v5.bin', Buffer.from('five'));
    await assign('Pump-2', 'fw', { title: 'pump-fw', version: '5', url: `${httpBase}/images/v5.bin`, checksum_algorithm: 'SHA256', checksum: sha256(Buffer.from('five')) });
    const result = await coapClient(gw.uri('/fw/pump-token-2?title=pump-fw&version=4'), ['-m', 'get']);
    expect(result.response?.code).toBe('4.00');
    expect(result.response?.payload).toMatch(/assigned firmware is "pump-fw" version "5"/);
    const none = await coapClient(gw.uri('/fw/pump-token-2'), ['-m', 'get']);
    expect(none.response?.code).toBe('4.00');
    expect(none.response?.payload).toMatch(/title and version are required/);
  });

  it('answers 4.04 when no package is assigned, after asking ThingsBoard', async () => {
    const result = await coapClient(gw.uri('/sw/boiler-token-7?title=x&version=1'), ['-m', 'get']);
    expect(result.response?.code).toBe('4.04');
    expect(result.response?.payload).toMatch(/no software package is assigned/);
    expect(tb.on('v1/gateway/attributes/request').map((message) => message.json)).toContainEqual(
      expect.objectContaining({ device: 'Boiler-7', client: false, keys: expect.arrayContaining(['sw_title', 'sw_version']) }),
    );
  });

  it('serves software from the local directory, verified with CRC32 as ThingsBoard renders it', async () => {
    const image = randomBytes(700);
    writeFileSync(join(imagesDir, 'boiler-sw-2.0.bin'), image);
    const { crc32 } = await import('node:zlib');
    await assign('Boiler-7', 'sw', { title: 'boiler-sw', version: '2.0', checksum_algorithm: 'CRC32', checksum: crc32(image).toString(16) });
    const file = join(work, 'sw.bin');
    const result = await download('/sw/boiler-token-7?title=boiler-sw&version=2.0', 256, file);
    expect(result.response?.code).toBe('2.05');
    expect(readFileSync(file).equals(image)).toBe(true);
    expect(httpRequests).toHaveLength(0);
  });

  it('prefetches an assigned package as soon as the push arrives', async () => {
    const image = randomBytes(1500);
    served.set('/images/early.bin', image);
    await assign('Pump-2', 'fw', { title: 'early', version: '1', url: `${httpBase}/images/early.bin`, checksum_algorithm: 'SHA512', checksum: createHash('sha512').update(image).digest('hex') });
    await eventually(() => httpRequests.includes('/images/early.bin'), 5000, 'the gateway to fetch the assigned image');
  });

  it('counts downloads, failures and refusals on /metrics', async () => {
    const { address, port } = gw.gateway.httpAddress!;
    const text = await (await fetch(`http://${address}:${port}/metrics`)).text();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);
    // Every image above was fetched once: boiler-fw, chunked, common, slow, v5 (prefetched), boiler-sw, early.
    expect(value('coap2mqtt_firmware_fetches_total')).toBeGreaterThanOrEqual(6);
    expect(value('coap2mqtt_firmware_refused_total')).toBe(1);
    expect(value('coap2mqtt_firmware_memory_bytes')).toBeGreaterThan(5000);
  });
});
