// /healthz and /metrics over real HTTP, on a gateway with a real mosquitto, libcoap's coap-client as the
// devices and a ThingsBoard double on the broker.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coapClient, spawnCoapClient, type RunningCoapClient } from '../helpers/coap-client.js';
import { DEVICES, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { HeldConnections } from '../helpers/held-connections.js';
import { parseWriteBytes } from '../../src/ops/process-io.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeTcpPort } from '../helpers/ports.js';
import { ThingsBoardDouble } from '../helpers/thingsboard-double.js';

let broker: Mosquitto;
let gw: TestGateway;
let tb: ThingsBoardDouble;
const running: RunningCoapClient[] = [];
const UNKNOWN_TOKEN = 'not-a-registered-token-5f3a';

interface HttpAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

function request(target: TestGateway, path: string, method = 'GET'): Promise<HttpAnswer> {
  const address = target.gateway.httpAddress!;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: address.address, port: address.port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The samples of a Prometheus text exposition; throws on a line that is not one. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample with this name whose labels include `labels`; undefined if none. */
function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

/** The HELP text of one series in an exposition. */
function answerHelp(answer: HttpAnswer, name: string): string | undefined {
  return new RegExp(`^# HELP ${name} (.*)$`, 'm').exec(answer.body)?.[1];
}

async function scrape(target: TestGateway = gw): Promise<Sample[]> {
  const answer = await request(target, '/metrics');
  expect(answer.status).toBe(200);
  return parseExposition(answer.body);
}

async function health(target: TestGateway = gw): Promise<{ status: number; body: Record<string, any> }> {
  const answer = await request(target, '/healthz');
  expect(answer.headers['content-type']).toBe('application/json; charset=utf-8');
  return { status: answer.status, body: JSON.parse(answer.body) as Record<string, any> };
}

/** Polls an async check until it returns something other than undefined/false. */
async function eventuallyAsync<T>(check: () => Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  gw = await startTestGateway({
    upstream: { url: broker.url, accessToken: 'gateway-secret-token', reconnectMinMs: 200, reconnectMaxMs: 400 },
    sessions: { rpcQueueTtlMs: 60_000, idleTimeoutMs: 0 },
  });
  await gw.upstreamConnected();
});

afterAll(async () => {
  await Promise.all(running.map((client) => client.stop()));
  await gw?.stop();
  await tb?.close();
  await broker?.dispose();
});

describe('/metrics', () => {
  it('counts requests by transport, route and code, and never shows a token', async () => {
    const ok = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"temperature":21.5}']);
    expect(ok.response?.code).toBe('2.01');
    const unknown = await coapClient(gw.uri(`/api/v1/${UNKNOWN_TOKEN}/telemetry`), ['-m', 'post', '-e', '{"t":1}']);
    expect(unknown.response?.code).toBe('4.01');
    const badPath = await coapClient(gw.uri(`/${UNKNOWN_TOKEN}/somewhere`));
    expect(badPath.response?.code).toBe('4.04');
    const badFeature = await coapClient(gw.uri('/api/v1/boiler-token-7/nonsense'), ['-m', 'post', '-e', '{}']);
    expect(badFeature.response?.code).toBe('4.00');
    const wrongMethod = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'));
    expect(wrongMethod.response?.code).toBe('4.00');

    const answer = await request(gw, '/metrics');
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    for (const secret of [UNKNOWN_TOKEN, 'gateway-secret-token', ...DEVICES.map((device) => device.token)]) {
      expect(answer.body).not.toContain(secret);
    }
    const samples = parseExposition(answer.body);
    const requests = (route: string, code: string) => valueOf(samples, 'coap2mqtt_coap_requests_total', { transport: 'udp', route, code });
    expect(requests('telemetry', '2.01')).toBe(1);
    expect(requests('telemetry', '4.01')).toBe(1);
    expect(requests('telemetry', '4.00')).toBe(1);
    expect(requests('other', '4.04')).toBe(1);
    expect(requests('unknown', '4.00')).toBe(1);
    // Only operation names as routes, whatever the paths were.
    const routes = new Set(samples.filter((s) => s.name === 'coap2mqtt_coap_requests_total').map((s) => s.labels['route']));
    expect([...routes].sort()).toEqual(['other', 'telemetry', 'unknown']);
    expect(valueOf(samples, 'coap2mqtt_coap_datagrams_total')).toBeGreaterThanOrEqual(5);
    expect(valueOf(samples, 'coap2mqtt_coap_malformed_total')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_coap_too_many_requests_total', { limit: 'device' })).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_devices')).toBe(DEVICES.length);
    expect(valueOf(samples, 'coap2mqtt_ready')).toBe(1);
    expect(samples.find((s) => s.name === 'coap2mqtt_build_info')?.labels['version']).toMatch(/^\d+\.\d+\.\d+/);
    // DTLS is off: no DTLS series at all.
    expect(samples.some((s) => s.name.startsWith('coap2mqtt_dtls_'))).toBe(false);
    // prom-client's process metrics come along.
    expect(valueOf(samples, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(samples.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
  });

  it('shows the outbox and the upstream connection with plausible values', async () => {
    const before = await scrape();
    const accepted = valueOf(before, 'coap2mqtt_outbox_accepted_total')!;
    const readings = (samples: readonly Sample[]): number =>
      valueOf(samples, 'coap2mqtt_outbox_readings_total', { path: 'direct' })! + valueOf(samples, 'coap2mqtt_outbox_readings_total', { path: 'spilled' })!;
    const readingsBefore = readings(before);
    for (let i = 0; i < 3; i++) {
      const result = await coapClient(gw.uri('/api/v1/pump-token-2/telemetry'), ['-m', 'post', '-e', `{"rpm":${1000 + i}}`]);
      expect(result.response?.code).toBe('2.01');
    }
    await tb.waitFor('v1/gateway/telemetry');
    const samples = await eventuallyAsync(async () => {
      const now = await scrape();
      return valueOf(now, 'coap2mqtt_outbox_records') === 0 && valueOf(now, 'coap2mqtt_outbox_accepted_total')! >= accepted + 3 && now;
    }, 10_000, 'the readings to be acknowledged');
    // With the broker keeping up (outbox.mode "spill"), the readings went straight upstream: nothing stored.
    expect(valueOf(samples, 'coap2mqtt_outbox_accepted_total')).toBe(accepted + 3);
    // Each answered reading went one way or the other (which depends on outbox.mode and the broker's pace).
    expect(readings(samples)).toBe(readingsBefore + 3);
    expect(readings(samples)).toBe(valueOf(samples, 'coap2mqtt_outbox_accepted_total'));
    expect(valueOf(samples, 'coap2mqtt_outbox_bytes')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_outbox_oldest_age_seconds')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_outbox_accepting')).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_outbox_dropped_total', { reason: 'quota' })).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_outbox_rejected_total', { reason: 'low_disk' })).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_upstream_connected')).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_upstream_reconnects_total')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_upstream_publishes_total', { outcome: 'acknowledged' })).toBeGreaterThanOrEqual(2);
    // Every acknowledged publish went into the PUBACK histogram, each well under the 10 s publish timeout.
    const pubacks = valueOf(samples, 'coap2mqtt_upstream_puback_latency_seconds_count')!;
    expect(pubacks).toBe(valueOf(samples, 'coap2mqtt_upstream_publishes_total', { outcome: 'acknowledged' }));
    expect(valueOf(samples, 'coap2mqtt_upstream_puback_latency_seconds_bucket', { le: '10' })).toBe(pubacks);
    expect(valueOf(samples, 'coap2mqtt_upstream_puback_latency_seconds_sum')).toBeLessThan(pubacks * 10);
  });

  it('counts the bytes this process caused to be written to storage, as the kernel counts them', async () => {
    // The gateway runs in this process: its series is this process's write_bytes at the moment of the scrape.
    const ownCount = (): number => parseWriteBytes(readFileSync('/proc/self/io', 'utf8'))!;
    const before = ownCount();
    const samples = await scrape();
    const after = ownCount();
    const written = valueOf(samples, 'coap2mqtt_process_written_bytes_total');
    expect(written).toBeGreaterThanOrEqual(before);
    expect(written).toBeLessThanOrEqual(after);
    expect(answerHelp(await request(gw, '/metrics'), 'coap2mqtt_process_written_bytes_total')).toMatch(/write_bytes in \/proc\/self\/io.*wears an SD card/);
  });

  it('shows only series that the table in docs/health-and-metrics.md documents', async () => {
    const doc = readFileSync(join(import.meta.dirname, '../../docs/health-and-metrics.md'), 'utf8');
    const shown = new Set((await scrape()).map((sample) => sample.name.replace(/_(bucket|sum|count)$/, '')).filter((name) => name.startsWith('coap2mqtt_')));
    expect(shown.size).toBeGreaterThan(40);
    expect([...shown].filter((name) => !doc.includes(`| \`${name}\` |`))).toEqual([]);
  });

  it('times a server-side RPC from ThingsBoard to the observing device\'s reply', async () => {
    const device = spawnCoapClient(gw.uri('/api/v1/boiler-token-7/rpc'), ['-s', '30']);
    running.push(device);
    const [registered] = await device.waitForResponses(1);
    expect(registered!.code).toBe('2.03');
    await tb.publish('v1/gateway/rpc', { device: 'Boiler-7', data: { id: 41, method: 'setGpio', params: { pin: 2 } } });
    const [, notification] = await device.waitForResponses(2, 3000);
    expect(notification!.code).toBe('2.05');
    const pending = await scrape();
    expect(valueOf(pending, 'coap2mqtt_rpc_pending')).toBe(1);
    expect(valueOf(pending, 'coap2mqtt_observe_relations')).toBe(1);

    const reply = await coapClient(gw.uri('/api/v1/boiler-token-7/rpc/41'), ['-m', 'post', '-e', '{"ok":true}']);
    expect(reply.response?.code).toBe('2.01');
    const samples = await scrape();
    expect(valueOf(samples, 'coap2mqtt_rpc_requests_total')).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_rpc_pending')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_rpc_round_trip_seconds_count', { outcome: 'replied' })).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_rpc_round_trip_seconds_count', { outcome: 'dropped' })).toBe(0);
    const seconds = valueOf(samples, 'coap2mqtt_rpc_round_trip_seconds_sum', { outcome: 'replied' })!;
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(10);
    expect(valueOf(samples, 'coap2mqtt_observe_notifications_total')).toBeGreaterThanOrEqual(1);
    expect(valueOf(samples, 'coap2mqtt_coap_requests_total', { transport: 'udp', route: 'rpc_observe', code: '2.03' })).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_coap_requests_total', { transport: 'udp', route: 'rpc_reply', code: '2.01' })).toBe(1);
    await device.stop();
  });
});

describe('/metrics with DTLS', () => {
  it('counts handshakes, refused identities and requests over DTLS, never a key or identity', async () => {
    const psk = { identity: 'metrics-psk-sensor', key: 'metrics psk key 42' };
    const secure = await startTestGateway({
      upstream: { url: broker.url },
      dtls: { enabled: true, port: 0 },
      devices: [...DEVICES, { name: 'Psk-Sensor', psk }],
    });
    try {
      await secure.upstreamConnected();
      const coaps = (path: string) => `coaps://127.0.0.1:${secure.gateway.dtlsAddress!.port}${path}`;
      const ok = await coapClient(coaps('/api/v1/telemetry'), ['-u', psk.identity, '-k', psk.key, '-m', 'post', '-e', '{"t":1}'], {
        binary: 'coap-client-openssl',
      });
      expect(ok.response?.code).toBe('2.01');
      const refused = await coapClient(coaps('/api/v1/telemetry'), ['-u', 'stranger-9', '-k', 'some other key', '-m', 'post', '-e', '{"t":1}'], {
        binary: 'coap-client-openssl',
        timeoutSeconds: 2,
      });
      expect(refused.response).toBeUndefined();
      const answer = await request(secure, '/metrics');
      for (const secret of [psk.key, psk.identity, 'stranger-9', 'some other key']) expect(answer.body).not.toContain(secret);
      const samples = parseExposition(answer.body);
      expect(valueOf(samples, 'coap2mqtt_dtls_handshakes_total')).toBe(1);
      expect(valueOf(samples, 'coap2mqtt_dtls_handshake_failures_total', { reason: 'unknown_psk_identity' })).toBe(1);
      expect(valueOf(samples, 'coap2mqtt_dtls_handshake_failures_total', { reason: 'timeout' })).toBe(0);
      expect(valueOf(samples, 'coap2mqtt_dtls_hello_verify_requests_total')).toBeGreaterThanOrEqual(2);
      expect(valueOf(samples, 'coap2mqtt_dtls_sessions')).toBeGreaterThanOrEqual(0);
      // Both handshakes are over: none under way, none dropped by the half-open pool.
      expect(valueOf(samples, 'coap2mqtt_dtls_handshakes_in_progress')).toBe(0);
      for (const reason of ['pool_full', 'address_limit', 'stalled']) {
        expect(valueOf(samples, 'coap2mqtt_dtls_handshakes_dropped_total', { reason })).toBe(0);
      }
      expect(valueOf(samples, 'coap2mqtt_coap_requests_total', { transport: 'dtls', route: 'telemetry', code: '2.01' })).toBe(1);
      expect((await health(secure)).body['coap']).toHaveProperty('dtlsSessions');
    } finally {
      await secure.stop();
    }
  });
});

describe('the HTTP endpoint', () => {
  it('answers only GET and HEAD on /healthz and /metrics', async () => {
    const missing = await request(gw, '/');
    expect(missing.status).toBe(404);
    expect((await request(gw, '/metrics/extra')).status).toBe(404);
    expect((await request(gw, '/api/v1/boiler-token-7/telemetry', 'POST')).status).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const refused = await request(gw, '/metrics', method);
      expect(refused.status).toBe(405);
      expect(refused.headers['allow']).toBe('GET, HEAD');
    }
    expect((await request(gw, '/healthz', 'POST')).status).toBe(405);
    const head = await request(gw, '/healthz', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(Number(head.headers['content-length'])).toBeGreaterThan(0);
    // A query string does not change the path.
    expect((await request(gw, '/healthz?verbose=1')).status).toBe(200);
    expect(missing.headers['connection']).toBe('close');
  });

  it('says which key to change when the port is taken', async () => {
    const blocker = net.createServer();
    const port = await freeTcpPort();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      await expect(startTestGateway({ upstream: { url: broker.url }, http: { port } })).rejects.toThrow(
        new RegExp(`health and metrics port ${port} on 127.0.0.1 is already in use.*http\\.port`),
      );
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('still answers a scrape while more stalled connections than it holds (16) are open, and closes them within 5 s', async () => {
    const { address, port } = gw.gateway.httpAddress!;
    const silent = await HeldConnections.open(port, address, 12, { kind: 'silent' });
    const dribbling = await HeldConnections.open(port, address, 12, { kind: 'dribble', everyMs: 100 });
    try {
      expect((await request(gw, '/healthz')).status).toBe(200);
      await eventually(() => silent.closed === 12 && dribbling.closed === 12, 8000, 'the endpoint to close the stalled connections');
    } finally {
      silent.close();
      dribbling.close();
    }
  });

  it('is not started with http.enabled false', async () => {
    const quiet = await startTestGateway({ upstream: { url: broker.url }, http: { enabled: false } });
    try {
      expect(quiet.gateway.httpAddress).toBeUndefined();
    } finally {
      await quiet.stop();
    }
  });
});

describe('/healthz', () => {
  it('answers 200 "ok" while connected, with the outbox and nothing secret', async () => {
    // The RPC reply of the test before may still be on its way out of the outbox.
    const { status, body } = await eventuallyAsync(async () => {
      const answer = await health();
      return answer.body['outbox'].records === 0 && answer;
    }, 5000, 'an empty outbox');
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: 'ok', ready: true, problems: [], devices: DEVICES.length });
    expect(body['upstream']).toMatchObject({ connected: true, url: broker.url, reconnects: 0 });
    expect(new Date(body['upstream'].since).getTime()).toBeLessThanOrEqual(Date.now());
    expect(body['outbox']).toMatchObject({ enabled: true, records: 0, oldestAgeSeconds: 0 });
    expect(body['uptimeSeconds']).toBeGreaterThanOrEqual(0);
    expect(JSON.stringify(body)).not.toContain('gateway-secret-token');
  });

  it('stays 200 but "degraded" while the broker is down and the outbox holds readings; 503 without an outbox', async () => {
    await broker.stop();
    const down = await eventuallyAsync(async () => {
      const answer = await health();
      return answer.body['status'] === 'degraded' && answer;
    }, 10_000, 'status degraded');
    expect(down.status).toBe(200);
    expect(down.body).toMatchObject({ ready: true, upstream: { connected: false } });
    expect(down.body['problems'][0]).toMatch(/not connected to the upstream broker.*readings wait in the outbox/);

    const stored = await coapClient(gw.uri('/api/v1/boiler-token-7/telemetry'), ['-m', 'post', '-e', '{"temperature":19}']);
    expect(stored.response?.code).toBe('2.01');
    const waiting = await eventuallyAsync(async () => {
      const answer = await health();
      return answer.body['outbox'].oldestAgeSeconds > 0 && answer;
    }, 5000, 'the reading to age in the outbox');
    expect(waiting.body['outbox'].records).toBe(1);
    const samples = await scrape();
    expect(valueOf(samples, 'coap2mqtt_upstream_connected')).toBe(0);
    expect(valueOf(samples, 'coap2mqtt_outbox_records')).toBe(1);
    expect(valueOf(samples, 'coap2mqtt_outbox_oldest_age_seconds')).toBeGreaterThan(0);
    expect(valueOf(samples, 'coap2mqtt_ready')).toBe(1);

    // The same outage without an outbox: devices get 5.03, so the box is not ready.
    const direct = await startTestGateway({ upstream: { url: broker.url, reconnectMinMs: 200, reconnectMaxMs: 400 }, outbox: { enabled: false } });
    try {
      const refused = await eventuallyAsync(async () => {
        const answer = await health(direct);
        return answer.body['status'] === 'degraded' && answer;
      }, 10_000, 'the outbox-less gateway to report degraded');
      expect(refused.status).toBe(503);
      expect(refused.body).toMatchObject({ ready: false, outbox: { enabled: false }, upstream: { connected: false } });
      expect(refused.body['problems'][0]).toMatch(/devices are answered 5\.03/);
      expect(valueOf(await scrape(direct), 'coap2mqtt_ready')).toBe(0);
    } finally {
      await direct.stop();
    }

    await broker.start();
    const back = await eventuallyAsync(async () => {
      const answer = await health();
      return answer.body['status'] === 'ok' && answer.body['outbox'].records === 0 && answer;
    }, 15_000, 'status ok with the outbox delivered');
    expect(back.status).toBe(200);
    expect(back.body['upstream']).toMatchObject({ connected: true, reconnects: 1 });
    const after = await scrape();
    expect(valueOf(after, 'coap2mqtt_upstream_reconnects_total')).toBe(1);
    expect(valueOf(after, 'coap2mqtt_upstream_connect_failures_total')).toBeGreaterThanOrEqual(0);
  });

  it('answers 503 "stopping" once the gateway stops, then closes', async () => {
    // A client-side RPC nobody answers keeps the gateway draining (up to stop()'s 1 s) while we ask.
    const leaving = await startTestGateway({ upstream: { url: broker.url }, sessions: { clientRpcTimeoutMs: 5000 } });
    await leaving.upstreamConnected();
    const address = leaving.gateway.httpAddress!;
    const slow = coapClient(leaving.uri('/api/v1/boiler-token-7/rpc'), ['-m', 'post', '-e', '{"method":"getTime"}'], { timeoutSeconds: 2 });
    await eventually(() => leaving.gateway.messageLayer.stats.requests >= 1, 5000, 'the RPC to arrive');
    const stopped = leaving.stop();
    const { status, body } = await health(leaving);
    expect(status).toBe(503);
    expect(body).toMatchObject({ status: 'stopping', ready: false });
    await stopped;
    await slow;
    await expect(
      new Promise((resolve, reject) => {
        const socket = net.connect(address.port, address.address, () => {
          socket.destroy();
          resolve('connected');
        });
        socket.once('error', reject);
      }),
    ).rejects.toThrow(/ECONNREFUSED/);
  });
});
