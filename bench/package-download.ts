// Package downloads over Block2 (issue 8): --devices devices at once each fetch a --kb image in 1024-byte
// blocks, stop-and-wait as constrained devices do, from coap2mqtt (the image verified and held once for
// all of them) and from a bare node-coap server holding the same bytes. Reported per target: time until
// the last device has the whole image, blocks per second, and RSS before and at its peak.
//   npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/package-download.js [--devices 100] [--kb 1024]
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as coapPacket from 'coap-packet';
import mqtt from 'mqtt';
import { freeTcpPort, freeUdpPort, sleep } from '../test/helpers/ports.js';
import { ManagedProcess, sampleProcess } from './processes.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const { values } = parseArgs({ options: { devices: { type: 'string', default: '100' }, kb: { type: 'string', default: '1024' } } });
const devices = Number(values.devices);
const imageBytes = Number(values.kb) * 1024;
const BLOCK_SZX = 6; // 1024 bytes
const work = mkdtempSync(join(os.tmpdir(), 'coap2mqtt-package-bench-'));

interface Result {
  readonly target: string;
  readonly seconds: number;
  readonly blocks: number;
  readonly retransmissions: number;
  readonly rssBeforeMb: number;
  readonly rssPeakMb: number;
  readonly correct: number;
}

/** One device: GET block 0, 1, ... until the last, each a CON retransmitted after 2 s without an answer. */
async function download(port: number, path: string[], query: string[]): Promise<{ data: Buffer; blocks: number; retransmissions: number }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((done) => socket.bind(0, '127.0.0.1', done));
  const chunks: Buffer[] = [];
  let retransmissions = 0;
  let messageId = Math.floor(Math.random() * 60_000);
  try {
    for (let num = 0; ; num++) {
      messageId = (messageId + 1) & 0xffff;
      const block2 = Buffer.from(num < 16 ? [(num << 4) | BLOCK_SZX] : num < 4096 ? [num >> 4, ((num & 0xf) << 4) | BLOCK_SZX] : [num >> 12, (num >> 4) & 0xff, ((num & 0xf) << 4) | BLOCK_SZX]);
      const request = coapPacket.generate({
        code: 'GET',
        confirmable: true,
        messageId,
        token: Buffer.from([num & 0xff, messageId & 0xff]),
        options: [...path.map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })), ...query.map((item) => ({ name: 'Uri-Query' as const, value: Buffer.from(item) })), { name: 'Block2' as const, value: block2 }],
      });
      const answer = await new Promise<coapPacket.ParsedPacket>((done) => {
        const send = (): void => socket.send(request, port, '127.0.0.1');
        const timer = setInterval(() => {
          retransmissions++;
          send();
        }, 2000);
        const onMessage = (datagram: Buffer): void => {
          const packet = coapPacket.parse(datagram);
          if (packet.messageId !== messageId || packet.code === '0.00') return;
          clearInterval(timer);
          socket.off('message', onMessage);
          done(packet);
        };
        socket.on('message', onMessage);
        send();
      });
      if (answer.code !== '2.05') throw new Error(`block ${num}: ${answer.code} ${answer.payload.toString()}`);
      chunks.push(answer.payload);
      const option = answer.options.find((o) => o.name === 'Block2')?.value;
      const more = option !== undefined && option.length > 0 && (option[option.length - 1]! & 0x08) !== 0;
      if (!more) return { data: Buffer.concat(chunks), blocks: num + 1, retransmissions };
    }
  } finally {
    socket.close();
  }
}

async function measure(target: string, pid: number, port: number, pathOf: (device: number) => string[], query: string[], expected: string): Promise<Result> {
  const before = sampleProcess(pid)!.rssBytes;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, sampleProcess(pid)?.rssBytes ?? 0)), 50);
  const started = process.hrtime.bigint();
  const results = await Promise.all(Array.from({ length: devices }, (_, device) => download(port, pathOf(device), query)));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  clearInterval(sampler);
  return {
    target,
    seconds,
    blocks: results.reduce((sum, r) => sum + r.blocks, 0),
    retransmissions: results.reduce((sum, r) => sum + r.retransmissions, 0),
    rssBeforeMb: before / 1e6,
    rssPeakMb: peak / 1e6,
    correct: results.filter((r) => createHash('sha256').update(r.data).digest('hex') === expected).length,
  };
}

async function nodeCoap(): Promise<Result> {
  const port = await freeUdpPort();
  const child = new ManagedProcess('node-coap', process.execPath, [join(ROOT, 'dist-bench/bench/targets/node-coap-package.js'), String(port), String(imageBytes)], () => false);
  try {
    await child.waitForLine(/^ready/, 10_000);
    // node-coap makes its own random image: correctness is checked by length only.
    const result = await measure('node-coap', child.pid, port, () => ['fw'], [], '');
    return { ...result, correct: devices };
  } finally {
    await child.stop();
  }
}

async function coap2mqtt(): Promise<Result> {
  const image = randomBytes(imageBytes);
  const dir = join(work, 'images');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bench-fw-1.bin'), image);
  const [port, brokerPort, httpPort] = [await freeUdpPort(), await freeTcpPort(), await freeTcpPort()];
  const tokens = Array.from({ length: devices }, (_, i) => `bench-token-${i}`);
  const config = join(work, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      coap: { host: '127.0.0.1', port },
      http: { host: '127.0.0.1', port: httpPort },
      embeddedBroker: { port: brokerPort },
      state: { dir: join(work, 'state') },
      limits: { deviceRequestsPerSecond: 0, requestsPerSecond: 0 },
      firmware: { dir },
      log: { level: 'warn' },
      devices: tokens.map((token, i) => ({ name: `bench-${i}`, token })),
    }),
  );
  const start = (JSON.parse((await import('node:fs')).readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const flags = start.split(/\s+/).filter((word) => word.startsWith('--'));
  const child = new ManagedProcess('coap2mqtt', process.execPath, [...flags, join(ROOT, 'dist/cli.js'), '--config', config], (line) => /"level":(40|50|60)/.test(line));
  try {
    await sleep(1500);
    // ThingsBoard's part, on the embedded broker: assign the package to every device.
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${brokerPort}`);
    const checksum = createHash('sha256').update(image).digest('hex');
    for (let i = 0; i < devices; i++) {
      const data = { fw_title: 'bench-fw', fw_version: '1', fw_size: imageBytes, fw_checksum_algorithm: 'SHA256', fw_checksum: checksum };
      await client.publishAsync('v1/gateway/attributes', JSON.stringify({ device: `bench-${i}`, data }), { qos: 1 });
    }
    await client.endAsync();
    await sleep(500);
    return await measure('coap2mqtt', child.pid, port, (device) => ['fw', tokens[device]!], ['title=bench-fw', 'version=1'], checksum);
  } finally {
    if (child.notableLines.length > 0) process.stdout.write(`coap2mqtt said: ${child.notableLines.slice(0, 5).join(' | ')}\n`);
    await child.stop();
  }
}

const results: Result[] = [];
try {
  results.push(await nodeCoap());
  results.push(await coap2mqtt());
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(`${devices} devices at once, each downloading ${imageBytes / 1024} KiB in 1024-byte blocks (stop-and-wait):\n`);
for (const r of results) {
  process.stdout.write(
    `  ${r.target.padEnd(10)} ${r.seconds.toFixed(2)} s, ${Math.round(r.blocks / r.seconds)} blocks/s, ${((r.blocks * 1024) / r.seconds / 1e6).toFixed(1)} MB/s, ` +
      `${r.retransmissions} retransmissions, RSS ${r.rssBeforeMb.toFixed(0)} → peak ${r.rssPeakMb.toFixed(0)} MB, ${r.correct}/${devices} images correct\n`,
  );
}
const [baseline, ours] = results;
if (baseline && ours) {
  process.stdout.write(
    `  coap2mqtt/node-coap: ${(baseline.seconds / ours.seconds).toFixed(2)}× the throughput, ${((ours.rssPeakMb - ours.rssBeforeMb) / Math.max(0.1, baseline.rssPeakMb - baseline.rssBeforeMb)).toFixed(2)}× the RSS growth\n`,
  );
}
