// Reading a process's write counter (/proc/PID/io, or a gateway's /metrics over real HTTP) and turning
// two readings into a rate, as doctor does for the running gateway.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseWriteBytes, readWrittenBytes } from '../../src/ops/process-io.js';
import { measureWriteRate, metricsWriteCounter, parseWriteCount, procWriteCounter, type WriteCount, type WriteCounter } from '../../src/ops/write-rate.js';

const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-write-rate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PROC_IO = 'rchar: 2012\nwchar: 4520\nsyscr: 31\nsyscw: 17\nread_bytes: 0\nwrite_bytes: 12288\ncancelled_write_bytes: 4096\n';

describe('process I/O accounting', () => {
  it('reads write_bytes, not wchar or cancelled_write_bytes', () => {
    expect(parseWriteBytes(PROC_IO)).toBe(12288);
    expect(parseWriteBytes('rchar: 1\nwchar: 2\n')).toBeUndefined();
    const file = join(dir, 'io');
    writeFileSync(file, PROC_IO);
    expect(readWrittenBytes(file)).toBe(12288);
    expect(readWrittenBytes(join(dir, 'missing'))).toBeUndefined();
  });

  it('reads this process\'s own counter where the kernel has one', () => {
    const own = readWrittenBytes('/proc/self/io');
    if (process.platform === 'linux') expect(own).toBeGreaterThanOrEqual(0);
    else expect(own).toBeUndefined();
  });

  it('reads another process\'s counter and start time from its /proc directory', async () => {
    const proc = join(dir, 'proc');
    mkdirSync(join(proc, '812'), { recursive: true });
    writeFileSync(join(proc, '812', 'io'), PROC_IO);
    // Started 1000 s after boot (100 ticks a second); the box has been up 4600 s: one hour ago. The command
    // name holds a space and a parenthesis, as a process may name itself.
    writeFileSync(join(proc, '812', 'stat'), `812 (node (main) x) S 1 812 812 0 -1 4194560 9077 0 0 0 128 40 0 0 20 0 11 0 100000 1130110976 18094 18446744073709551615\n`);
    writeFileSync(join(proc, 'uptime'), '4600.00 9000.00\n');
    const count = (await procWriteCounter(812, proc).read()) as WriteCount;
    expect(count.bytes).toBe(12288);
    expect(Math.abs(count.startedAt! - (Date.now() - 3_600_000))).toBeLessThan(5000);
    expect(await procWriteCounter(813, proc).read()).toMatch(/^cannot read .*813\/io: ENOENT/);
  });
});

describe('a gateway\'s /metrics', () => {
  const EXPOSITION = [
    '# HELP coap2mqtt_process_written_bytes_total Bytes ...',
    '# TYPE coap2mqtt_process_written_bytes_total counter',
    'coap2mqtt_process_written_bytes_total 9285632',
    'coap2mqtt_outbox_readings_total{path="direct"} 0',
    '# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.',
    'process_start_time_seconds 1796541527',
    '',
  ].join('\n');

  it('gives the write count and the start time', () => {
    expect(parseWriteCount(EXPOSITION)).toEqual({ bytes: 9285632, startedAt: 1796541527000 });
    expect(parseWriteCount('coap2mqtt_ready 1\n')).toBeUndefined();
  });

  it('is asked over HTTP; a server without the series, or none at all, is said in words', async () => {
    let body = EXPOSITION;
    const server = http.createServer((_request, response) => response.end(body));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const counter = metricsWriteCounter('127.0.0.1', port);
      expect(counter.source).toBe(`http://127.0.0.1:${port}/metrics`);
      expect(await counter.read()).toEqual({ bytes: 9285632, startedAt: 1796541527000 });
      body = 'coap2mqtt_ready 1\n';
      expect(await counter.read()).toMatch(/has no coap2mqtt_process_written_bytes_total \(a coap2mqtt older than this one, or not on Linux\)$/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(await metricsWriteCounter('127.0.0.1', port).read()).toBe(`http://127.0.0.1:${port}/metrics: connection refused`);
  });
});

describe('measureWriteRate', () => {
  /** A counter that answers the given values in turn. */
  const scripted = (source: string, values: Array<number | string>): WriteCounter => ({
    source,
    read: () => {
      const value = values.shift()!;
      return Promise.resolve(typeof value === 'string' ? value : { bytes: value, startedAt: 1000 });
    },
  });

  it('divides what was written between two readings by the time between them', async () => {
    const rate = await measureWriteRate([scripted('/proc/812/io', [10_000, 10_000 + 4096])], 50);
    expect(rate).toMatchObject({ source: '/proc/812/io', totalBytes: 14_096, startedAt: 1000 });
    // 4096 bytes over about 50 ms: near 81,920 bytes/s, and not far below on an idle machine. A timer may
    // fire a millisecond before 50 ms have passed on the clock (libuv measures from its cached loop time).
    const { bytesPerSecond } = rate as { bytesPerSecond: number };
    expect(bytesPerSecond).toBeLessThanOrEqual(4096 / 0.045);
    expect(bytesPerSecond).toBeGreaterThan(4096 / 5);
  });

  it('falls back to the next counter, and keeps every reason when none answers', async () => {
    const denied = scripted('/proc/812/io', ['/proc/812/io is the service\'s own (run doctor with sudo to read it)']);
    const metrics = scripted('http://127.0.0.1:9464/metrics', [500, 500]);
    expect(await measureWriteRate([denied, metrics], 10)).toMatchObject({ source: 'http://127.0.0.1:9464/metrics', bytesPerSecond: 0, totalBytes: 500 });
    const refused = scripted('http://127.0.0.1:9464/metrics', ['http://127.0.0.1:9464/metrics: connection refused']);
    expect(await measureWriteRate([scripted('/proc/812/io', ['/proc/812/io is the service\'s own (run doctor with sudo to read it)']), refused], 10)).toEqual({
      unknown: ['/proc/812/io is the service\'s own (run doctor with sudo to read it)', 'http://127.0.0.1:9464/metrics: connection refused'],
    });
  });

  it('counts a counter that went back (the gateway restarted between readings) as no rate, not a negative one', async () => {
    expect(await measureWriteRate([scripted('/proc/812/io', [90_000, 1_000])], 10)).toMatchObject({ bytesPerSecond: 0, totalBytes: 1_000 });
  });
});
