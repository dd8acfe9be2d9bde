// The DTLS lock-out of issue 19: --handshakes handshakes (12,000 by default) that echo their cookie, as
// DTLSv1_listen requires, then go silent, each from a source port of its own, against a gateway process
// with the default dtls.* settings. Meanwhile a real PSK device (coap-client-openssl) posts a reading
// again and again. Reported: the gateway's RSS before, at peak, when the flood ends and once every
// half-open handshake has timed out; each device attempt and whether it was answered; the DTLS counters.
//   npm run build && npx tsc -p bench/tsconfig.json && node dist-bench/bench/dtls-flood.js \
//     [--handshakes 12000] [--addresses 1] [--same-address] [--concurrency 64] [--settle-s 35]
// --addresses spreads the flood over 127.0.1.1, 127.0.1.2, ... (a flood from many hosts); --same-address
// floods from 127.0.0.1, the device's own address (a flooder behind the same NAT as the device).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { coapClient } from '../test/helpers/coap-client.js';
import { HalfOpenFlood } from '../test/helpers/dtls-flooder.js';
import { freeTcpPort, freeUdpPort, sleep } from '../test/helpers/ports.js';
import { ManagedProcess, sampleProcess } from './processes.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    handshakes: { type: 'string', default: '12000' },
    addresses: { type: 'string', default: '1' },
    'same-address': { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '64' },
    'settle-s': { type: 'string', default: '35' },
  },
});
const handshakes = Number(values.handshakes);
const localAddresses = values['same-address']
  ? ['127.0.0.1']
  : Array.from({ length: Number(values.addresses) }, (_, i) => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`);
const settleMs = Number(values['settle-s']) * 1000;
const DEVICE = { identity: 'flood-witness', key: 'witness-key-0123456789' };
const DEVICE_TIMEOUT_S = 3;
const mb = (bytes: number | undefined): string => ((bytes ?? NaN) / 2 ** 20).toFixed(0);

interface Attempt {
  /** ms since the flood started. */
  readonly at: number;
  readonly echoedAtStart: number;
  readonly answeredMs: number | undefined;
}

const work = mkdtempSync(join(os.tmpdir(), 'coap2mqtt-dtls-flood-'));
const [coapPort, dtlsPort, httpPort, brokerPort] = [await freeUdpPort(), await freeUdpPort(), await freeTcpPort(), await freeTcpPort()];
const config = join(work, 'config.json');
writeFileSync(
  config,
  JSON.stringify({
    coap: { host: '127.0.0.1', port: coapPort },
    dtls: { enabled: true, port: dtlsPort },
    http: { host: '127.0.0.1', port: httpPort },
    embeddedBroker: { port: brokerPort },
    state: { dir: join(work, 'state') },
    log: { level: 'info' },
    devices: [{ name: 'Flood-Witness', psk: DEVICE }],
  }),
);
const start = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
const flags = start.split(/\s+/).filter((word) => word.startsWith('--'));
const gateway = new ManagedProcess('coap2mqtt', process.execPath, [...flags, join(ROOT, 'dist/cli.js'), '--config', config], (line) => /"level":(40|50|60)/.test(line));
const rss = (): number | undefined => sampleProcess(gateway.pid)?.rssBytes;

/** One device request over DTLS; the time to its answer, or undefined. */
async function deviceAttempt(n: number): Promise<number | undefined> {
  const begun = Date.now();
  const result = await coapClient(
    `coaps://127.0.0.1:${dtlsPort}/api/v1/telemetry`,
    ['-u', DEVICE.identity, '-k', DEVICE.key, '-m', 'post', '-e', JSON.stringify({ n })],
    { binary: 'coap-client-openssl', timeoutSeconds: DEVICE_TIMEOUT_S },
  );
  return result.response?.code === '2.01' ? Date.now() - begun : undefined;
}

async function dtlsMetrics(): Promise<string[]> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  return text.split('\n').filter((line) => line.startsWith('coap2mqtt_dtls_'));
}

try {
  await gateway.waitForLine(/coap2mqtt started/, 15_000);
  if ((await deviceAttempt(0)) === undefined) throw new Error('the device gets no answer even before the flood');
  await sleep(1000);
  const before = rss();
  let peak = before ?? 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rss() ?? 0)), 50);

  const flood = new HalfOpenFlood({
    host: '127.0.0.1',
    port: dtlsPort,
    count: handshakes,
    concurrency: Number(values.concurrency),
    localAddresses,
    maxDurationMs: 120_000,
  });
  const floodStart = Date.now();
  const attempts: Attempt[] = [];
  // What the flood leaves behind the moment it ends, before anything has had time to expire.
  const atFloodEnd = flood.done.then(async () => ({ at: Date.now(), rss: rss(), metrics: await dtlsMetrics() }));
  let floodOver = false;
  void atFloodEnd.then(() => (floodOver = true));
  // The device tries again as soon as an attempt ends, during the flood and after it until it is answered.
  while (Date.now() - floodStart < 120_000) {
    const at = Date.now() - floodStart;
    const echoedAtStart = flood.progress.echoed;
    const answeredMs = await deviceAttempt(attempts.length + 1);
    attempts.push({ at, echoedAtStart, answeredMs });
    if (floodOver && answeredMs !== undefined) break;
  }
  const progress = await flood.done;
  const end = await atFloodEnd;
  await sleep(end.at + settleMs - Date.now());
  const settled = rss();
  clearInterval(sampler);
  await flood.close();
  const metricsSettled = await dtlsMetrics();

  const out = process.stdout;
  out.write(
    `flood: ${progress.echoed} cookie-echoing handshakes (${progress.unanswered} unanswered) in ${(progress.elapsedMs / 1000).toFixed(1)} s ` +
      `from ${localAddresses.length === 1 ? localAddresses[0] : `${localAddresses.length} addresses`}, ${values.concurrency} at a time\n`,
  );
  out.write(`gateway RSS: before ${mb(before)} MB, peak ${mb(peak)} MB, at flood end ${mb(end.rss)} MB, ${settleMs / 1000} s later ${mb(settled)} MB\n`);
  out.write(`device (coap-client-openssl, PSK, -B ${DEVICE_TIMEOUT_S}) attempts:\n`);
  for (const a of attempts) {
    out.write(`  at ${(a.at / 1000).toFixed(1)} s (flood at ${a.echoedAtStart}): ${a.answeredMs === undefined ? 'no answer' : `answered in ${a.answeredMs} ms`}\n`);
  }
  const during = attempts.filter((a) => a.at < progress.elapsedMs);
  out.write(`answered during the flood: ${during.filter((a) => a.answeredMs !== undefined).length}/${during.length}\n`);
  out.write(`DTLS metrics at flood end:\n  ${end.metrics.join('\n  ')}\n`);
  out.write(`DTLS metrics ${settleMs / 1000} s after the flood:\n  ${metricsSettled.join('\n  ')}\n`);
  if (gateway.notableLines.length > 0) out.write(`gateway warnings (${gateway.notableCount}):\n  ${gateway.notableLines.slice(0, 10).join('\n  ')}\n`);
} finally {
  await gateway.stop();
  rmSync(work, { recursive: true, force: true });
}
