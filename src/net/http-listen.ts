// What both HTTP servers (health/metrics, the device API) do the same way: listen exclusively and report
// the address, keep track of connections, and close them all on stop.
import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { BoundAddress } from './udp-socket.js';

/** Resolves with the address listened on; rejects with the listen error. Later errors go to the log. */
export function listenHttp(server: http.Server, host: string, port: number, log: Logger, what: string): Promise<BoundAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject);
      server.on('error', (error) => log.error({ err: error }, `${what} error`));
      const address = server.address();
      resolve(typeof address === 'object' && address !== null ? { address: address.address, port: address.port } : { address: host, port });
    });
  });
}

/** The server's open connections, kept up to date. */
export function trackConnections(server: http.Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return sockets;
}

/** Stops listening and ends every connection, idle or not. */
export async function closeHttp(server: http.Server, sockets: ReadonlySet<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const socket of sockets) socket.destroy();
  await closed;
}
