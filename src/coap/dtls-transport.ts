import type { Logger } from 'pino';
import { DtlsServer, type DtlsConnection, type DtlsPolicy, type DtlsServerOptions } from '../dtls/server.js';
import type { BoundAddress } from '../net/udp-socket.js';
import { formatPeer, type DatagramSink, type DatagramTransport, type Peer, type PeerRecord } from './transport.js';
import type { PeerCredential } from '../model.js';

interface DtlsPeer extends Peer {
  /** The DTLS session table's key. */
  readonly connectionKey: string;
}

// Worst-case DTLS 1.2 expansion (13-byte record header, CBC IV, SHA-384 MAC, padding) and room for a CoAP
// header, token and options around a block.
const RECORD_OVERHEAD = 13 + 16 + 48 + 16;
const COAP_OVERHEAD = 96;

/**
 * CoAP over DTLS (RFC 7252 §9): decrypted datagrams go to the same message layer as plain UDP. A peer is
 * its address plus its credential, so a device that re-handshakes from the same address (after an idle
 * timeout, say) keeps its deduplication state and Observe relations; a different identity there is a
 * different peer. Sessions without a credential are only ever their own session.
 */
export class DtlsTransport implements DatagramTransport {
  readonly name = 'dtls';
  readonly maxBlockSize: number;
  readonly server: DtlsServer;
  private readonly peers = new WeakMap<DtlsConnection, DtlsPeer>();
  private anonymousSessions = 0;

  constructor(options: DtlsServerOptions, policy: DtlsPolicy, sink: DatagramSink, log: Logger) {
    this.maxBlockSize = largestBlockWithin(options.mtu - RECORD_OVERHEAD - COAP_OVERHEAD);
    this.server = new DtlsServer(options, policy, { data: (connection, plaintext) => sink(plaintext, this.peerOf(connection)) }, log);
  }

  start(): Promise<BoundAddress> {
    return this.server.start();
  }

  stop(): Promise<void> {
    return this.server.stop();
  }

  send(peer: Peer, datagram: Buffer): void {
    const { connectionKey } = peer as DtlsPeer;
    const connection = this.server.connection(connectionKey);
    // Only on a session of the same principal: never to whoever holds that address now.
    if (connection && this.peerOf(connection).key === peer.key) connection.send(datagram);
  }

  reachable(peer: Peer): boolean {
    const connection = this.server.connection((peer as DtlsPeer).connectionKey);
    return connection !== undefined && this.peerOf(connection).key === peer.key;
  }

  /** Only a peer with an identity can be recognised after a restart: a session without one ends with it. */
  record(peer: Peer): PeerRecord | undefined {
    if (!peer.credential) return undefined;
    return { transport: this.name, address: peer.address, port: peer.port, credential: peer.credential };
  }

  /** The same key a new session of that identity from that address gets, so the two meet (see reachable()). */
  restore(record: PeerRecord): Peer {
    const connectionKey = formatPeer({ address: record.address, port: record.port });
    return {
      key: `dtls ${connectionKey} ${principalOf(record.credential)}`,
      address: record.address,
      port: record.port,
      transport: this,
      credential: record.credential,
      connectionKey,
    } as DtlsPeer;
  }

  private peerOf(connection: DtlsConnection): DtlsPeer {
    let peer = this.peers.get(connection);
    if (!peer) {
      const { credential } = connection;
      const principal = credential === undefined ? `session ${++this.anonymousSessions}` : principalOf(credential);
      peer = {
        key: `dtls ${connection.key} ${principal}`,
        address: connection.address,
        port: connection.port,
        transport: this,
        credential,
        connectionKey: connection.key,
      };
      this.peers.set(connection, peer);
    }
    return peer;
  }
}

function principalOf(credential: PeerCredential | undefined): string {
  if (credential === undefined) return 'unknown';
  return credential.kind === 'psk' ? `psk ${credential.identity}` : `cert ${credential.fingerprint256}`;
}

function largestBlockWithin(bytes: number): number {
  let size = 1024;
  while (size > 16 && size > bytes) size /= 2;
  return size;
}
