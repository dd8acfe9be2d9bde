import dgram from 'node:dgram';
import type { Logger } from 'pino';
import { ipv6Unavailable, listenErrorAdvice } from './socket-advice.js';

export interface UdpSocketOptions {
  readonly host: string;
  readonly port: number;
  /** Requested kernel buffer sizes; fan-outs of many notifications overflow the default receive buffer. */
  readonly socketBufferBytes: number;
}

export interface BoundAddress {
  readonly address: string;
  readonly port: number;
}

/** "[2001:db8::1]:5683" / "10.0.0.5:5683": the form technicians read in logs. */
export const formatAddress = (endpoint: { readonly address: string; readonly port: number }): string =>
  endpoint.address.includes(':') ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;

export interface BoundSocket {
  readonly socket: dgram.Socket;
  readonly address: BoundAddress;
}

/**
 * Binds the UDP socket a device-facing listener (plain CoAP or DTLS) uses. "::" binds one dual-stack socket
 * (IPv4 peers appear as ::ffff:a.b.c.d); on a box whose kernel has IPv6 switched off it falls back to
 * 0.0.0.0 and says so. `label` names the listener in logs ("CoAP", "DTLS").
 */
export async function bindUdpSocket(
  options: UdpSocketOptions,
  onMessage: (datagram: Buffer, remote: dgram.RemoteInfo) => void,
  label: string,
  log: Logger,
): Promise<BoundSocket> {
  const { host, port } = options;
  try {
    return await bind(host, port, options, onMessage, label, log);
  } catch (error) {
    if (ipv6Unavailable(host, error as NodeJS.ErrnoException)) {
      log.warn({ host, fallback: '0.0.0.0' }, `IPv6 is not available on this host; ${label} listens on IPv4 only`);
      return bind('0.0.0.0', port, options, onMessage, label, log);
    }
    throw error;
  }
}

function bind(
  host: string,
  port: number,
  options: UdpSocketOptions,
  onMessage: (datagram: Buffer, remote: dgram.RemoteInfo) => void,
  label: string,
  log: Logger,
): Promise<BoundSocket> {
  const socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
  return new Promise((resolve, reject) => {
    socket.once('error', (error) => {
      socket.close();
      reject(error);
    });
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.removeAllListeners('error');
      socket.on('error', (error) => log.error({ err: error }, `${label} UDP socket error`));
      try {
        socket.setRecvBufferSize(options.socketBufferBytes);
        socket.setSendBufferSize(options.socketBufferBytes);
      } catch (error) {
        // The kernel caps these at net.core.rmem_max/wmem_max; running with its default is fine.
        log.debug({ err: error }, 'could not enlarge UDP socket buffers');
      }
      socket.on('message', onMessage);
      const bound = socket.address();
      resolve({ socket, address: { address: bound.address, port: bound.port } });
    });
  });
}

/** What a technician can do about a failed bind, in one sentence. CoAP and DTLS both listen on coap.host. */
export function describeBindError(error: NodeJS.ErrnoException, label: string, host: string, port: number, portKey: string): string {
  return listenErrorAdvice(error, {
    transport: 'UDP',
    host,
    port,
    hostKey: 'coap.host',
    portKey,
    portName: `${label} port`,
    purpose: label,
    usualHolders: 'another coap2mqtt or CoAP server?',
  });
}
