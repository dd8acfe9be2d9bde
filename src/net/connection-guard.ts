// Keeps an HTTP server's connection table for requests. Node closes a connection only once its request
// has begun (headersTimeout) and refuses every new one at maxConnections, so clients that connect and
// send nothing hold their slots for ever and shut real clients out. Here a connection must finish a
// request head within a deadline of opening (or of its last answer), and a full table makes room by
// closing its oldest connection that is not in a request; only requests in progress (a long-poll, a
// body arriving) are never closed for a newcomer. A per-address bound keeps one address from taking
// the whole table with requests it holds open.
import type http from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionGuardOptions {
  readonly maxConnections: number;
  readonly maxPerAddress: number;
  /** How long a connection may stay without a request in progress: after opening, or after an answer. */
  readonly requestWaitMs: number;
}

/**
 * Why a connection was closed: `timeout` (no request head in time), `evicted` (idle, closed to make room
 * for a new connection), `refused` (a new connection with no room: every slot holds a request).
 */
export type ConnectionCloseReason = 'timeout' | 'evicted' | 'refused';

export interface ConnectionGuardStats {
  readonly open: number;
  readonly closed: Readonly<Record<ConnectionCloseReason, number>>;
}

/** Told when the table is full, to warn (rate limited by the caller) that a client may be flooding it. */
export type CrowdedListener = (reason: 'evicted' | 'refused', bound: 'total' | 'address', address: string) => void;

interface Connection {
  readonly socket: Socket;
  readonly address: string;
  /** Requests whose answer has not yet finished (Node handles one at a time; a count is simply safe). */
  active: number;
  /** Since when it has had no request in progress. */
  idleSince: number;
}

/** The deadline is checked this often: a stalled connection lives at most requestWaitMs plus this. */
const SWEEP_EVERY_MS = 1_000;

export class ConnectionGuard {
  /** In order of arrival, so the first idle one found is the oldest. */
  private readonly connections = new Map<Socket, Connection>();
  private readonly byAddress = new Map<string, Set<Connection>>();
  private readonly closed: Record<ConnectionCloseReason, number> = { timeout: 0, evicted: 0, refused: 0 };
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: ConnectionGuardOptions,
    private readonly crowded: CrowdedListener,
  ) {}

  /** Guards `server` from now on; call before it listens. */
  attach(server: http.Server): void {
    // Not with server.maxConnections as well: Node would refuse newcomers before the guard made room.
    server.on('connection', (socket: Socket) => this.admit(socket));
    server.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
      const connection = this.connections.get(request.socket);
      if (!connection) return;
      connection.active++;
      response.once('close', () => {
        connection.active--;
        connection.idleSince = Date.now();
      });
    });
    this.sweeper = setInterval(() => this.sweep(Date.now()), SWEEP_EVERY_MS);
  }

  /** Passes on the server's listen outcome; if it could not listen, there is nothing to guard: the sweep stops. */
  listening<T>(listen: Promise<T>): Promise<T> {
    return listen.catch((error: unknown) => {
      this.stop();
      throw error;
    });
  }

  /** The open connections (for closing them all on stop). */
  sockets(): IterableIterator<Socket> {
    return this.connections.keys();
  }

  stats(): ConnectionGuardStats {
    return { open: this.connections.size, closed: { ...this.closed } };
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    const fromAddress = this.byAddress.get(address);
    if (fromAddress && fromAddress.size >= this.options.maxPerAddress) {
      if (!this.makeRoom(fromAddress.values(), socket, 'address', address)) return;
    } else if (this.connections.size >= this.options.maxConnections) {
      if (!this.makeRoom(this.connections.values(), socket, 'total', address)) return;
    }
    const connection: Connection = { socket, address, active: 0, idleSince: Date.now() };
    this.connections.set(socket, connection);
    const peers = this.byAddress.get(address) ?? new Set<Connection>();
    peers.add(connection);
    this.byAddress.set(address, peers);
    socket.once('close', () => this.forget(connection));
  }

  /** Closes the oldest idle one of `candidates` for `newcomer`, or the newcomer when all are busy. */
  private makeRoom(candidates: Iterable<Connection>, newcomer: Socket, bound: 'total' | 'address', address: string): boolean {
    for (const candidate of candidates) {
      if (candidate.active > 0) continue;
      this.close(candidate, 'evicted');
      this.crowded('evicted', bound, address);
      return true;
    }
    this.closed.refused++;
    newcomer.destroy();
    this.crowded('refused', bound, address);
    return false;
  }

  private sweep(now: number): void {
    for (const connection of this.connections.values()) {
      if (connection.active === 0 && now - connection.idleSince >= this.options.requestWaitMs) this.close(connection, 'timeout');
    }
  }

  private close(connection: Connection, reason: ConnectionCloseReason): void {
    this.closed[reason]++;
    // Forgotten at once: the newcomer takes its place before the socket's 'close' event comes.
    this.forget(connection);
    connection.socket.destroy();
  }

  private forget(connection: Connection): void {
    if (!this.connections.delete(connection.socket)) return;
    const peers = this.byAddress.get(connection.address);
    peers?.delete(connection);
    if (peers?.size === 0) this.byAddress.delete(connection.address);
  }
}
