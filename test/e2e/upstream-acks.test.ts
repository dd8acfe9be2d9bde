// A broker that keeps Nagle's algorithm on (mosquitto's default, and how test/helpers/mosquitto.ts runs it;
// a TCP proxy in between does the same) sends a PUBACK only once its previous one is acknowledged at the TCP
// level. Linux delays that ACK, by 40 ms at least, unless the gateway has data to send that carries it. So
// of two publishes in flight together the second was acknowledged only when the delayed-ACK timer fired,
// and under a steady load every PUBACK waited for the gateway's next publish (p50 1.5 ms instead of 0.4 ms
// at 2,000 readings/s; bench: npm run bench -- --targets coap2mqtt-puback --broker-nagle).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { UpstreamConnection } from '../../src/upstream/connection.js';
import type { QuickAckBinding } from '../../src/upstream/quick-ack.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { eventually } from '../helpers/ports.js';

/** Linux's shortest delayed ACK is 40 ms (TCP_DELACK_MIN); a PUBACK sent at once takes well under 1 ms here. */
const WELL_UNDER_A_DELAYED_ACK_MS = 20;

const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-upstream-acks-'));
let pki: TestPki;
let plain: Mosquitto;
let tls: Mosquitto;

beforeAll(async () => {
  pki = makeTestPki(join(dir, 'pki'));
  [plain, tls] = await Promise.all([
    Mosquitto.start(),
    Mosquitto.start(undefined, { tls: { certFile: pki.server.certFile, keyFile: pki.server.keyFile } }),
  ]);
});

afterAll(async () => {
  await Promise.all([plain?.dispose(), tls?.dispose()]);
  rmSync(dir, { recursive: true, force: true });
});

async function connect(url: string, ca = '', log: Logger = createLogger('silent'), binding?: () => QuickAckBinding): Promise<UpstreamConnection> {
  const loaded = loadConfig({ env: {} });
  if (!loaded.ok) throw new Error(loaded.errors.join('; '));
  const upstream = new UpstreamConnection({ ...loaded.config.upstream, url, ca, sessionLimitsTimeoutMs: 0 }, log, binding);
  upstream.start();
  await eventually(() => upstream.connected, 5000, 'the connection to the broker');
  return upstream;
}

/** Milliseconds until the PUBACK of the second of two publishes sent together, `pairs` times; the median. */
async function secondOfPairMedianMs(upstream: UpstreamConnection, pairs: number): Promise<number> {
  const publish = async (): Promise<number> => {
    const sentAt = performance.now();
    await upstream.publish('v1/gateway/telemetry', '{"Boiler-7":[{"ts":1,"values":{"t":21.5}}]}');
    return performance.now() - sentAt;
  };
  // One at a time first: a fresh connection acknowledges its first segments at once (quick-ack mode) and
  // only then settles into delayed ACKs, as a connection that has been up a while has.
  for (let i = 0; i < 50; i++) await publish();
  const seconds: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const [, second] = await Promise.all([publish(), publish()]);
    seconds.push(second);
  }
  return seconds.sort((a, b) => a - b)[Math.floor(pairs / 2)]!;
}

describe('PUBACKs from a broker that keeps Nagle on', () => {
  it('publishes in flight together are all acknowledged at once, without waiting for a delayed ACK (plain TCP)', async () => {
    const upstream = await connect(plain.url);
    try {
      expect(await secondOfPairMedianMs(upstream, 11)).toBeLessThan(WELL_UNDER_A_DELAYED_ACK_MS);
    } finally {
      await upstream.stop();
    }
  });

  it('the same over TLS', async () => {
    const upstream = await connect(tls.url.replace('127.0.0.1', 'localhost'), pki.caFile);
    try {
      expect(await secondOfPairMedianMs(upstream, 11)).toBeLessThan(WELL_UNDER_A_DELAYED_ACK_MS);
    } finally {
      await upstream.stop();
    }
  });

  it('without the native helper the connection still works, and the log says once what that costs', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('warn', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const upstream = await connect(plain.url, '', log, () => {
      throw new Error('build/Release/tcp_quickack.node is missing: run "npm rebuild"');
    });
    try {
      await upstream.publish('v1/gateway/telemetry', '{"Boiler-7":[{"ts":1,"values":{"t":21.5}}]}');
      expect(upstream.stats().acknowledged).toBe(1);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 'warn', reason: expect.stringContaining('tcp_quickack.node is missing') });
      expect(String(lines[0]!.msg)).toMatch(/Nagle.*40 ms/);
    } finally {
      await upstream.stop();
    }
  });
});
