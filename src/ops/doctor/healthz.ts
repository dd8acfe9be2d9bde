// The running gateway's own word on its health, from /healthz on http.port.
import http from 'node:http';
import { LOCAL_PROBE_TIMEOUT_MS } from './probes.js';

export function summarizeHealth(body: string): { status: string | undefined; text: string } {
  try {
    const health = JSON.parse(body) as Record<string, unknown>;
    if (health !== null && typeof health === 'object' && typeof health.status === 'string') {
      const parts = [`status "${health.status}"`];
      if (typeof health.ready === 'boolean') parts.push(health.ready ? 'devices are served' : 'devices are NOT served');
      const upstream = health.upstream as { connected?: unknown } | undefined;
      if (typeof upstream?.connected === 'boolean') parts.push(upstream.connected ? 'upstream connected' : 'upstream NOT connected');
      const outbox = health.outbox as { records?: unknown } | undefined;
      if (typeof outbox?.records === 'number') parts.push(`${outbox.records} readings in the outbox`);
      const problems = Array.isArray(health.problems) ? health.problems.filter((problem): problem is string => typeof problem === 'string') : [];
      if (problems.length > 0) parts.push(`problems: ${problems.join('; ')}`);
      return { status: health.status, text: parts.join(', ') };
    }
  } catch {
    // Not JSON: shown as it came.
  }
  const text = body.replace(/\s+/g, ' ').trim();
  return { status: undefined, text: text.length > 200 ? `${text.slice(0, 200)}…` : text || '(empty)' };
}

export function getHealthz(host: string, port: number): Promise<{ status: number; body: string } | undefined> {
  return new Promise((done) => {
    const request = http.get({ host, port, path: '/healthz', timeout: LOCAL_PROBE_TIMEOUT_MS }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      response.on('end', () => done({ status: response.statusCode ?? 0, body }));
      response.on('error', () => done(undefined));
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => done(undefined));
  });
}
