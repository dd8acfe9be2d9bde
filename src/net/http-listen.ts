// What the TCP listeners (health/metrics, the HTTP device API, MQTT for devices) do the same way: listen
// exclusively and report the address; and what both HTTP servers do on stop: close every connection
// (net/connection-guard.ts keeps track of them).
import type http from 'node:http';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { BoundAddress } from './udp-socket.js';

/** Resolves with the address listened on; rejects with the listen error. Later errors go to the log. */
export function listenHttp(server: Server, host: string, port: number, log: Logger, what: string): Promise<BoundAddress> {
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

/** Stops listening and ends every connection, idle or not. */
export async function closeHttp(server: http.Server, sockets: Iterable<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const socket of [...sockets]) socket.destroy();
  await closed;
}
