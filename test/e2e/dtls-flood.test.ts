// A flood of half-open DTLS handshakes (issue 19): clients that echo the cookie, as DTLSv1_listen requires,
// then go silent, from many source ports on many loopback addresses (a flood from many hosts), against a
// gateway process with a small dtls.maxSessions. Meanwhile a real PSK device (libcoap's coap-client-openssl)
// must still complete its handshake and be answered, and /metrics and the log must say what is going on.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coapClient } from '../helpers/coap-client.js';
import { HalfOpenFlood, floodReached } from '../helpers/dtls-flooder.js';
import { GatewayProcess, killAllGatewayProcesses, writeConfigFile } from '../helpers/gateway-process.js';
import { freeTcpPort, freeUdpPort } from '../helpers/ports.js';

const PSK = { identity: 'flood-witness', key: 'witness-key-0123456789' };
/** Small, so that the flood outgrows it quickly: before the fix, half-open handshakes filled it. */
const MAX_SESSIONS = 200;
/** Spread over 16 addresses, the flood is not held back by the per-address limit alone. */
const FLOOD_ADDRESSES = Array.from({ length: 16 }, (_, i) => `127.0.1.${i + 1}`);

let dir: string;
let gateway: GatewayProcess;
let dtlsPort: number;
let httpPort: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-dtls-flood-'));
  [dtlsPort, httpPort] = [await freeUdpPort(), await freeTcpPort()];
  const config = {
    coap: { host: '127.0.0.1', port: await freeUdpPort() },
    dtls: { enabled: true, port: dtlsPort, maxSessions: MAX_SESSIONS },
    http: { host: '127.0.0.1', port: httpPort },
    embeddedBroker: { port: await freeTcpPort() },
    state: { dir: join(dir, 'state') },
    log: { level: 'info' },
    devices: [{ name: 'Flood-Witness', psk: PSK }],
  };
  gateway = GatewayProcess.start(writeConfigFile(dir, config), { env: { COAP2MQTT_HTTP_PORT: String(httpPort) } });
  await gateway.ready();
});

afterAll(async () => {
  await killAllGatewayProcesses();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function dtlsMetric(name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('a flood of half-open DTLS handshakes', () => {
  it('keeps a real PSK device able to connect while it runs, in bounded memory, and says so in /metrics and the log', async () => {
    const flood = new HalfOpenFlood({
      host: '127.0.0.1',
      port: dtlsPort,
      count: 8000,
      concurrency: 64,
      localAddresses: FLOOD_ADDRESSES,
      maxDurationMs: 15_000,
      keepSocketsOpen: false,
    });
    try {
      // Three times dtls.maxSessions half-open handshakes: before the fix the table was full of them.
      expect(await floodReached(flood, 3 * MAX_SESSIONS, 10_000), `flood stalled: ${JSON.stringify(flood.progress)}`).toBe(true);
      const device = await coapClient(
        `coaps://127.0.0.1:${dtlsPort}/api/v1/telemetry`,
        ['-u', PSK.identity, '-k', PSK.key, '-m', 'post', '-e', '{"during":"flood"}'],
        { binary: 'coap-client-openssl', timeoutSeconds: 5 },
      );
      const echoedWhenAnswered = flood.progress.echoed;
      const floodStillRunning = !flood.progress.finished;
      expect(device.response?.code, `device got no answer during the flood\n${device.stderr}`).toBe('2.01');
      expect(floodStillRunning, `the flood ended (${JSON.stringify(flood.progress)}) before the device was answered`).toBe(true);
      expect(echoedWhenAnswered).toBeGreaterThan(3 * MAX_SESSIONS);

      // Half-open handshakes are bounded by their own pool (dtls.maxHandshakes, 512 by default), and the
      // flood made it give way: the stalest went so that newcomers could proceed.
      const inProgress = await dtlsMetric('coap2mqtt_dtls_handshakes_in_progress');
      expect(inProgress).toBeGreaterThan(0);
      expect(inProgress).toBeLessThanOrEqual(512);
      expect(await dtlsMetric('coap2mqtt_dtls_handshakes_dropped_total', '{reason="pool_full"}')).toBeGreaterThan(0);
      expect(await dtlsMetric('coap2mqtt_dtls_handshakes_total')).toBeGreaterThanOrEqual(1);
      // No established session was refused for want of room.
      expect(await dtlsMetric('coap2mqtt_dtls_handshake_failures_total', '{reason="table_full"}')).toBe(0);
    } finally {
      await flood.close();
    }
    // Thousands of dropped handshakes, one warning that says what happened and what it means.
    const warnings = gateway.logs().filter((line) => line.level === 'warn' && /^DTLS handshakes pile up unfinished/.test(String(line.msg)));
    expect(warnings.map((line) => line.msg)).toHaveLength(1);
    expect(String(warnings[0]!.msg)).toMatch(/established sessions are not affected/i);
    expect(warnings[0]).toMatchObject({ maxHandshakes: 512 });
  });
});
