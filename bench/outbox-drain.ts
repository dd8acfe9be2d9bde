// How fast a backlog left by an outage drains, and whether memory stays flat while it does:
//   npm run build && tsc -p bench/tsconfig.json && node --max-semi-space-size=4 --max-old-space-size=64 \
//     dist-bench/bench/outbox-drain.js [rows, default 1000000]
// Rows are spooled straight into a fresh outbox file (as a long outage would leave them), then the real
// Outbox and UpstreamConnection deliver them into a local mosquitto. Run with a small
// --max-old-space-size to show that the live heap does not grow with the backlog.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../src/log.js';
import { Outbox } from '../src/outbox/outbox.js';
import { OutboxStore, recordBytes, type NewRecord } from '../src/outbox/store.js';
import { UpstreamConnection } from '../src/upstream/connection.js';
import { UplinkKind } from '../src/upstream/gateway-api.js';
import { freeTcpPort, sleep } from '../test/helpers/ports.js';

const rows = Number(process.argv[2] ?? 1_000_000);
const dir = mkdtempSync(join(os.tmpdir(), 'coap2mqtt-drain-'));
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

const { store } = OutboxStore.open(join(dir, 'outbox.sqlite'), 'full');
let started = Date.now();
for (let batch = 0; batch < rows / 1000; batch++) {
  const records: NewRecord[] = [];
  for (let i = 0; i < 1000; i++) {
    const n = batch * 1000 + i;
    const body = JSON.stringify({ ts: 1_700_000_000_000 + n, values: { temperature: 21.5, n } });
    const device = `dev-${n % 1000}`;
    records.push({ kind: UplinkKind.telemetry, device, type: 'default', body, points: 2, createdAt: Date.now(), bytes: recordBytes({ device, type: 'default', body }) });
  }
  store.commit(records, []);
}
const fileBytes = statSync(join(dir, 'outbox.sqlite')).size;
process.stdout.write(`spooled ${rows} rows in ${Date.now() - started} ms: file ${mb(fileBytes)} MB\n`);

const port = await freeTcpPort();
const broker = spawn('mosquitto', ['-p', String(port)], { stdio: 'ignore' });
await sleep(300);
const log = createLogger('warn');
const upstream = new UpstreamConnection(
  {
    url: `mqtt://127.0.0.1:${port}`,
    accessToken: '',
    username: '',
    password: '',
    clientId: 'coap2mqtt-drain-bench',
    ca: '',
    cert: '',
    key: '',
    keepaliveSeconds: 60,
    connectTimeoutMs: 5000,
    reconnectMinMs: 500,
    reconnectMaxMs: 1000,
    publishTimeoutMs: 10_000,
    maxInflight: 80,
    maxQueuedPublishes: 10_000,
    maxMessageBytes: 65_536,
    maxDownlinkBytes: 65_536,
    maxDownlinkDepth: 32,
    sessionLimitsTimeoutMs: 0,
  },
  log,
);
const outbox = new Outbox(store, upstream, () => {}, { mode: 'always', spillAfterMs: 2000, maxBytes: 2 ** 40, maxAgeHours: 0, minFreeDiskBytes: 0, shutdownFlushMs: 1000, dir }, log);
let peakRss = 0;
let peakHeap = 0;
const sampler = setInterval(() => {
  const usage = process.memoryUsage();
  peakRss = Math.max(peakRss, usage.rss);
  peakHeap = Math.max(peakHeap, usage.heapUsed);
}, 100);
started = Date.now();
outbox.start();
upstream.start();
while (outbox.stats().delivered < rows) await sleep(50);
const seconds = (Date.now() - started) / 1000;
clearInterval(sampler);
const { publishes } = outbox.stats();
process.stdout.write(
  `drained ${rows} rows in ${seconds.toFixed(1)} s: ${Math.round(rows / seconds)} rows/s in ${publishes} publishes; ` +
    `peak RSS ${mb(peakRss)} MB, peak heap used ${mb(peakHeap)} MB\n`,
);
await outbox.stop();
await upstream.stop();
broker.kill();
rmSync(dir, { recursive: true, force: true });
