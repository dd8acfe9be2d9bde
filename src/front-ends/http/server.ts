// The HTTP front end's server (deviceHttp.*): reads a bounded request, hands it to the device API and writes
// its answer. Long-polls hold their connection; everything else is answered as it comes.
import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import type { Logger } from 'pino';
import { LogOncePer } from '../../log.js';
import { ConnectionGuard, type ConnectionGuardStats } from '../../net/connection-guard.js';
import { closeHttp, listenHttp } from '../../net/http-listen.js';
import { ipv6Unavailable, listenErrorAdvice } from '../../net/socket-advice.js';
import type { BoundAddress } from '../../net/udp-socket.js';
import { MAX_POLL_TIMEOUT_MS, text, type DeviceHttpApi, type HttpAnswer } from './device-http.js';

export interface DeviceHttpOptions {
  readonly host: string;
  readonly port: number;
  readonly maxBodyBytes: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerAddress: number;
}

/**
 * A connection that has not sent a whole request head this long after opening (or after its last answer,
 * as Node's 5 s keepAliveTimeout) is closed: a device on a LAN sends its head within milliseconds.
 */
const REQUEST_WAIT_MS = 5_000;
/** A client has this long to send its whole request, body included. */
const REQUEST_TIMEOUT_MS = 30_000;
/**
 * A connection with nothing sent either way for this long is closed: longer than the longest long-poll,
 * it ends connections whose client asked and then stopped reading its answer (they are never evicted).
 */
const SILENCE_TIMEOUT_MS = MAX_POLL_TIMEOUT_MS + 30_000;

export interface DeviceHttpStats {
  /** Answers sent, by HTTP status. */
  readonly responses: Readonly<Record<string, number>>;
  /** Long-polls waiting now. */
  readonly polls: number;
  readonly connections: ConnectionGuardStats;
}

export class DeviceHttpServer {
  private server: http.Server | undefined;
  private readonly responses: Record<string, number> = {};
  private readonly guard: ConnectionGuard;
  private readonly crowdedLog = new LogOncePer(10 * 60_000, 1);

  constructor(
    private readonly options: DeviceHttpOptions,
    private readonly api: DeviceHttpApi,
    private readonly log: Logger,
  ) {
    const { maxConnections, maxConnectionsPerAddress } = options;
    this.guard = new ConnectionGuard({ maxConnections, maxPerAddress: maxConnectionsPerAddress, requestWaitMs: REQUEST_WAIT_MS }, (reason, bound, peer) => {
      if (!this.crowdedLog.first('crowded')) return;
      const key = bound === 'total' ? `deviceHttp.maxConnections (${maxConnections})` : `deviceHttp.maxConnectionsPerAddress (${maxConnectionsPerAddress})`;
      this.log.warn(
        { peer, reason, closed: this.guard.stats().closed },
        `HTTP device API connections reached ${key}: idle connections are closed to make room, new ones refused when every connection holds a request (a flood, or the bound set too low?); see coap2mqtt_device_http_connections_closed_total; logged again in 10 minutes at most`,
      );
    });
  }

  /** Resolves with the address listened on; rejects with the listen error (see describeDeviceHttpBindError). */
  start(): Promise<BoundAddress> {
    const server = http.createServer(
      { headersTimeout: REQUEST_WAIT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1_000 },
      (request, response) => this.handle(request, response),
    );
    this.guard.attach(server);
    server.setTimeout(SILENCE_TIMEOUT_MS);
    const { host, port } = this.options;
    const listen = (on: string): Promise<BoundAddress> => listenHttp(server, on, port, this.log, 'HTTP device API');
    const listened = listen(host).catch((error: NodeJS.ErrnoException) => {
      // As the CoAP socket does: "::" on a kernel without IPv6 means IPv4 only.
      if (ipv6Unavailable(host, error)) return listen('0.0.0.0');
      throw error;
    });
    return this.guard.listening(listened).then((bound) => {
      this.server = server;
      return bound;
    });
  }

  stats(): DeviceHttpStats {
    return { responses: { ...this.responses }, polls: this.api.waiting(), connections: this.guard.stats() };
  }

  /** Ends waiting long-polls (503), closes the listener and every connection. */
  async stop(): Promise<void> {
    this.api.stop();
    this.guard.stop();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    // Let the 503s of the long-polls go out first.
    await new Promise((resolve) => setImmediate(resolve));
    await closeHttp(server, this.guard.sockets());
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const receivedAt = Date.now();
    const peer = request.socket.remoteAddress ?? '';
    const declared = Number(request.headers['content-length'] ?? 0);
    if (declared > this.options.maxBodyBytes) {
      // Not read: the connection closes after the answer.
      response.setHeader('Connection', 'close');
      this.answer(request, response, receivedAt, text(413, `body of ${declared} bytes is over the limit of ${this.options.maxBodyBytes} (deviceHttp.maxBodyBytes)`));
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    let tooLarge = false;
    request.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length > this.options.maxBodyBytes) {
        if (!tooLarge) {
          tooLarge = true;
          response.setHeader('Connection', 'close');
          this.answer(request, response, receivedAt, text(413, `body over the limit of ${this.options.maxBodyBytes} bytes (deviceHttp.maxBodyBytes)`));
          request.resume();
        }
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      if (tooLarge) return;
      const url = new URL(request.url ?? '/', 'http://device-api');
      const segments = decodeSegments(url.pathname);
      if (!segments) {
        this.answer(request, response, receivedAt, text(400, 'the path is not valid percent-encoded UTF-8'));
        return;
      }
      // URLSearchParams would turn such bytes into U+FFFD, and an attribute key so read goes upstream.
      if (!isUtf8Query(url.search)) {
        this.answer(request, response, receivedAt, text(400, 'the query is not valid percent-encoded UTF-8'));
        return;
      }
      const closeListeners: Array<() => void> = [];
      response.once('close', () => {
        if (!response.writableFinished) for (const listener of closeListeners) listener();
      });
      this.api
        .handle({
          method: request.method ?? 'GET',
          segments,
          query: [...url.searchParams].map(([name, value]) => `${name}=${value}`),
          contentType: request.headers['content-type'],
          body: Buffer.concat(chunks, length),
          peer,
          receivedAt,
          onClose: (listener) => closeListeners.push(listener),
        })
        .then(
          (answer) => this.answer(request, response, receivedAt, answer),
          (error: unknown) => {
            this.log.error({ err: error, path: redactPath(url.pathname) }, 'HTTP device request failed');
            this.answer(request, response, receivedAt, text(500, 'internal error; see the gateway log'));
          },
        );
    });
  }

  /** Sends the answer, counted by status and logged at debug (the path without its token). */
  private answer(request: http.IncomingMessage, response: http.ServerResponse, receivedAt: number, answer: HttpAnswer): void {
    this.responses[answer.status] = (this.responses[answer.status] ?? 0) + 1;
    if (this.log.isLevelEnabled('debug')) {
      const path = redactPath((request.url ?? '/').split('?', 1)[0]!);
      this.log.debug({ peer: request.socket.remoteAddress, method: request.method, path, status: answer.status, ms: Date.now() - receivedAt }, 'HTTP device request answered');
    }
    write(response, answer);
  }
}

function write(response: http.ServerResponse, answer: HttpAnswer): void {
  if (response.headersSent || response.destroyed) {
    answer.delivered?.(false);
    return;
  }
  const body = answer.body ?? '';
  response.writeHead(answer.status, {
    ...(answer.contentType ? { 'Content-Type': answer.contentType } : {}),
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...answer.headers,
  });
  // Told once: written to the socket, or the connection went first.
  let told = false;
  const tell = (sent: boolean): void => {
    if (told) return;
    told = true;
    answer.delivered?.(sent);
  };
  response.once('close', () => tell(response.writableFinished));
  response.end(body, () => tell(response.writableFinished));
}

function decodeSegments(pathname: string): string[] | undefined {
  try {
    return pathname.split('/').filter((segment) => segment !== '').map((segment) => decodeURIComponent(segment));
  } catch {
    return undefined;
  }
}

/** The query's bytes once %XX escapes are undone (Node refuses other bytes than ASCII in a request target). */
function isUtf8Query(search: string): boolean {
  if (!search.includes('%')) return true;
  return isUtf8(Buffer.from(search.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16))), 'latin1'));
}

/** /api/v1/TOKEN/telemetry → /api/v1/…/telemetry: paths hold access tokens, which never reach the log. */
function redactPath(pathname: string): string {
  return pathname.replace(/^(\/api\/v1\/)[^/]+/, '$1…');
}

/** What a technician can do about a failed listen, in one sentence naming the key to change. */
export function describeDeviceHttpBindError(error: NodeJS.ErrnoException, host: string, port: number): string {
  return listenErrorAdvice(error, {
    transport: 'TCP',
    host,
    port,
    hostKey: 'deviceHttp.host',
    portKey: 'deviceHttp.port',
    portName: 'the HTTP device API port',
    purpose: 'the HTTP device API',
    usualHolders: 'ThingsBoard itself, or another web server?',
  });
}
