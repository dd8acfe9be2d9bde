// The health and metrics endpoint: GET or HEAD /healthz and /metrics on http.host:http.port, nothing
// else. It needs no credentials, so it says nothing secret, reads no request bodies, keeps no connection
// open after its answer and holds only a few at a time: a scanner on the network cannot tie it up.
import http from 'node:http';
import type { Logger } from 'pino';
import { LogOncePer } from '../log.js';
import { ConnectionGuard } from '../net/connection-guard.js';
import { closeHttp, listenHttp } from '../net/http-listen.js';
import { listenErrorAdvice } from '../net/socket-advice.js';
import type { BoundAddress } from '../net/udp-socket.js';
import { healthReport, type HealthSources } from './health.js';
import { GatewayMetrics, METRICS_CONTENT_TYPE, type MetricsSources } from './metrics.js';

export interface OpsHttpOptions {
  readonly host: string;
  readonly port: number;
}

export type OpsSources = Omit<MetricsSources, 'ready'> & Omit<HealthSources, 'startedAt'>;

/**
 * Connections at once (Prometheus and a probe or two need a handful). A newcomer beyond them closes the
 * oldest one still without a request, so clients that connect and stall cannot lock a scrape out; on the
 * usual loopback address every client shares one address, so there is no separate bound per address.
 */
const MAX_CONNECTIONS = 16;
/** A client has this long from connecting to send its request line and headers, and to finish its request. */
const REQUEST_WAIT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const PATHS = new Set(['/healthz', '/metrics']);

export class OpsHttpServer {
  private readonly metrics: GatewayMetrics;
  private readonly health: HealthSources;
  private server: http.Server | undefined;
  private readonly guard: ConnectionGuard;
  private readonly crowdedLog = new LogOncePer(10 * 60_000, 1);
  private stopping = false;

  constructor(
    private readonly options: OpsHttpOptions,
    sources: OpsSources,
    private readonly log: Logger,
  ) {
    this.health = { ...sources, startedAt: Date.now() };
    this.guard = new ConnectionGuard({ maxConnections: MAX_CONNECTIONS, maxPerAddress: MAX_CONNECTIONS, requestWaitMs: REQUEST_WAIT_MS }, (reason, _bound, peer) => {
      if (!this.crowdedLog.first('crowded')) return;
      this.log.warn(
        { peer, reason, closed: this.guard.stats().closed },
        `the health and metrics endpoint reached its ${MAX_CONNECTIONS} connections: stalled ones are closed to make room (is a client flooding ${this.options.host}:${this.options.port}?); see coap2mqtt_http_connections_closed_total; logged again in 10 minutes at most`,
      );
    });
    this.metrics = new GatewayMetrics({ ...sources, opsHttp: this.guard, ready: () => healthReport(this.health, this.stopping).body.ready });
  }

  /** Resolves with the address listened on; rejects with the listen error (see describeHttpBindError). */
  start(): Promise<BoundAddress> {
    const server = http.createServer(
      {
        headersTimeout: REQUEST_WAIT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        // How often Node checks those two timeouts (an interval it clears on close); 30 s by default.
        connectionsCheckingInterval: 1_000,
      },
      (request, response) => this.handle(request, response),
    );
    this.guard.attach(server);
    // A client that asks and then never reads its answer holds its connection busy: closed after this.
    server.setTimeout(REQUEST_TIMEOUT_MS);
    const listened = listenHttp(server, this.options.host, this.options.port, this.log, 'health and metrics endpoint');
    return this.guard.listening(listened).then((bound) => {
      this.server = server;
      return bound;
    });
  }

  /** From now on /healthz answers 503 "stopping", while the rest of the gateway drains and closes. */
  beginStopping(): void {
    this.stopping = true;
  }

  /** Closes the listener and any connection still open. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.guard.stop();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await closeHttp(server, this.guard.sockets());
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    response.setHeader('Connection', 'close');
    response.setHeader('Cache-Control', 'no-store');
    response.setHeader('X-Content-Type-Options', 'nosniff');
    const path = (request.url ?? '/').split('?', 1)[0]!;
    if (!PATHS.has(path)) {
      send(response, 404, 'text/plain; charset=utf-8', 'not found: try /healthz or /metrics\n');
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('Allow', 'GET, HEAD');
      send(response, 405, 'text/plain; charset=utf-8', `method ${request.method ?? ''} not allowed: use GET or HEAD\n`);
      return;
    }
    if (path === '/healthz') {
      const { httpStatus, body } = healthReport(this.health, this.stopping);
      send(response, httpStatus, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`);
      return;
    }
    this.metrics.render().then(
      (text) => send(response, 200, METRICS_CONTENT_TYPE, text),
      (error: unknown) => {
        this.log.error({ err: error }, 'collecting metrics failed');
        send(response, 500, 'text/plain; charset=utf-8', 'collecting metrics failed; see the gateway log\n');
      },
    );
  }
}

function send(response: http.ServerResponse, status: number, contentType: string, body: string): void {
  if (response.destroyed) return;
  response.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  // Node leaves the body out for HEAD by itself.
  response.end(body);
}

/** What a technician can do about a failed listen, in one sentence naming the key to change. */
export function describeHttpBindError(error: NodeJS.ErrnoException, host: string, port: number): string {
  return listenErrorAdvice(error, {
    transport: 'TCP',
    host,
    port,
    hostKey: 'http.host',
    portKey: 'http.port',
    portName: 'the health and metrics port',
    purpose: 'health and metrics',
    usualHolders: 'another coap2mqtt, or a Prometheus exporter?',
    otherWayOut: 'set http.enabled to false',
  });
}
