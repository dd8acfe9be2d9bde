// What an outsider without a token can make the gateway hold (issue 19, defect 2), as RSS of a real gateway
// process on its embedded default:
// - path flood: CON GETs from one address to an unknown path of ~59 KB (230 Uri-Path options of 255 bytes),
//   each a new message id, so each answer is remembered for retransmissions (RFC 7252 §4.5);
// - Block1 flood: POSTs whose first Block1 block says more follows, each answered 2.31 Continue.
// Reported: RSS before, at the peak and 15 s after each phase, and answers received.
//   npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/memory-flood.js [--requests 24000] [--blocks 150000] [--cli dist/cli.js]
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as coapPacket from 'coap-packet';
import { freeTcpPort, freeUdpPort, sleep } from '../test/helpers/ports.js';
import { ManagedProcess, sampleProcess } from './processes.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '24000' },
    blocks: { type: 'string', default: '150000' },
    cli: { type: 'string', default: join(ROOT, 'dist/cli.js') },
    settle: { type: 'string', default: '15000' },
  },
});
const WINDOW = 256;
const work = mkdtempSync(join(os.tmpdir(), 'coap2mqtt-memory-flood-'));

const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(0);

/**
 * Sends `count` CON requests from the sockets in turn (a new message id each), at most WINDOW unanswered at
 * once; a request unanswered after a second is given up. Returns how many got an answer.
 */
async function flood(port: number, count: number, sockets: number, request: (messageId: number) => Buffer): Promise<number> {
  const peers = await Promise.all(
    Array.from({ length: sockets }, async () => {
      const socket = dgram.createSocket('udp4');
      await new Promise<void>((done) => socket.bind(0, '127.0.0.1', done));
      socket.setRecvBufferSize(8 * 2 ** 20);
      return socket;
    }),
  );
  let answered = 0;
  let outstanding = 0;
  let wake: (() => void) | undefined;
  for (const socket of peers) {
    socket.on('message', () => {
      answered++;
      outstanding--;
      wake?.();
    });
  }
  try {
    for (let i = 0; i < count; i++) {
      while (outstanding >= WINDOW) {
        const before = answered;
        await new Promise<void>((done) => {
          wake = done;
          setTimeout(done, 1000);
        });
        wake = undefined;
        if (answered === before) outstanding = 0; // lost: carry on rather than stall
      }
      outstanding++;
      peers[i % sockets]!.send(request(Math.floor(i / sockets) & 0xffff), port, '127.0.0.1');
    }
    await sleep(1000);
    return answered;
  } finally {
    for (const socket of peers) socket.close();
  }
}

const pathOf = (segments: number) => Array.from({ length: segments }, (_, i) => ({ name: 'Uri-Path' as const, value: Buffer.alloc(255, 97 + (i % 26)) }));
const pathRequest =
  (segments: number) =>
  (messageId: number): Buffer =>
    coapPacket.generate({ code: 'GET', confirmable: true, messageId, token: Buffer.alloc(0), options: pathOf(segments) }, 65_507);

const blockRequest = (messageId: number): Buffer =>
  coapPacket.generate({
    code: 'POST',
    confirmable: true,
    messageId,
    token: Buffer.from([messageId >> 8, messageId & 0xff]),
    // Block1 num 0, more, 16-byte blocks: a new upload each time.
    options: [
      ...['api', 'v1', 'no-such-token', 'telemetry'].map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
      { name: 'Block1' as const, value: Buffer.from([0x08]) },
    ],
    payload: Buffer.alloc(16, 0x20),
  });

interface Phase {
  readonly name: string;
  readonly sent: number;
  readonly answered: number;
  readonly before: number;
  readonly peak: number;
  readonly after: number;
}

async function phase(name: string, pid: number, run: () => Promise<{ sent: number; answered: number }>): Promise<Phase> {
  const before = sampleProcess(pid)!.rssBytes;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, sampleProcess(pid)?.rssBytes ?? 0)), 100);
  const { sent, answered } = await run();
  await sleep(Number(values.settle));
  clearInterval(sampler);
  const after = sampleProcess(pid)?.rssBytes ?? NaN;
  return { name, sent, answered, before, peak: Math.max(peak, after), after };
}

async function main(): Promise<void> {
  const [port, brokerPort, httpPort] = [await freeUdpPort(), await freeTcpPort(), await freeTcpPort()];
  const config = join(work, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      coap: { host: '127.0.0.1', port, socketBufferBytes: 8 * 2 ** 20 },
      http: { host: '127.0.0.1', port: httpPort },
      embeddedBroker: { port: brokerPort },
      state: { dir: join(work, 'state') },
      // The outsider's requests must reach the message layer, not be refused by a rate limit first.
      limits: { deviceRequestsPerSecond: 0, requestsPerSecond: 0, unknownTokenFailures: 0 },
      log: { level: 'info' },
      devices: [{ name: 'bench-0', token: 'bench-token-0' }],
    }),
  );
  const start = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
  const flags = start.split(/\s+/).filter((word) => word.startsWith('--'));
  const child = new ManagedProcess('coap2mqtt', process.execPath, [...flags, values.cli, '--config', config]);
  const phases: Phase[] = [];
  try {
    await child.waitForLine(/coap2mqtt started/, 10_000);
    await sleep(1000);
    const requests = Number(values.requests);
    const blocks = Number(values.blocks);
    phases.push(await phase(`path flood: ${requests} GETs of a 59 KB unknown path, one address`, child.pid, async () => ({ sent: requests, answered: await flood(port, requests, 1, pathRequest(230)) })));
    // Just under the gateway's 2 KB URI limit: every 4.04 is remembered, up to the address's share.
    phases.push(await phase(`path flood: ${requests} GETs of a 2 KB unknown path, one address`, child.pid, async () => ({ sent: requests, answered: await flood(port, requests, 1, pathRequest(8)) })));
    // 16-bit message ids: spread over ports so none is reused within the deduplication lifetime.
    phases.push(await phase(`Block1 flood: ${blocks} first blocks, one address`, child.pid, async () => ({ sent: blocks, answered: await flood(port, blocks, Math.ceil(blocks / 60_000), blockRequest) })));
  } finally {
    if (child.notableLines.length > 0) process.stdout.write(`coap2mqtt said: ${child.notableLines.slice(0, 5).join(' | ')}\n`);
    await child.stop();
    rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(`${values.cli}\n`);
  for (const p of phases) {
    process.stdout.write(
      `  ${p.name}: ${p.answered}/${p.sent} answered; RSS ${mb(p.before)} → peak ${mb(p.peak)} → ${mb(p.after)} MB ${Number(values.settle) / 1000} s later\n`,
    );
  }
}

await main();
