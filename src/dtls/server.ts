// DTLS 1.2 server: one UDP socket, a table of sessions keyed by peer address, the stateless cookie exchange
// for strangers, and the timers OpenSSL leaves to its user. It hands decrypted datagrams to its owner and
// knows nothing of what they contain.
import type dgram from 'node:dgram';
import type { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { boundedCache } from '../bounded-cache.js';
import type { DtlsConfig } from '../config/load.js';
import type { PeerCredential } from '../model.js';
import { bindUdpSocket, formatAddress, type BoundAddress, type UdpSocketOptions } from '../net/udp-socket.js';
import { HalfOpenPool, type DropReason } from './half-open-pool.js';
import { HandshakeReports } from './handshake-reports.js';
import {
  clientHelloRandom,
  isClientHello,
  loadDtlsBinding,
  type DtlsBinding,
  type FeedOutcome,
  type NativeContext,
  type NativeSession,
  type PresentedCertificate,
} from './native.js';

/** The typed slice of dtls.* the server needs, with the key material already read from its files. */
export interface DtlsServerOptions
  extends UdpSocketOptions,
    Pick<
      DtlsConfig,
      | 'requireClientCert'
      | 'ciphers'
      | 'securityLevel'
      | 'mtu'
      | 'handshakeTimeoutMs'
      | 'idleTimeoutMs'
      | 'maxSessions'
      | 'maxHandshakes'
      | 'maxHandshakesPerAddress'
      | 'sessionTickets'
    > {
  /** PEM texts. */
  readonly cert: string | undefined;
  readonly key: string | undefined;
  readonly ca: string | undefined;
  /** Ask clients for a certificate (needed for certificate devices); they may still use PSK. */
  readonly requestClientCert: boolean;
  /** Sessions idle for less than this are never evicted to make room (default one minute; tests shorten it). */
  readonly evictableAfterIdleMs?: number;
  /** A handshake whose peer is silent this long is stalled (default STALLED_HANDSHAKE_MS; tests shorten it). */
  readonly stalledHandshakeMs?: number;
}

/** Who may connect: asked synchronously during handshakes. */
export interface DtlsPolicy {
  /** The key for a PSK identity, or undefined when no device uses it. */
  pskKey(identity: string): Buffer | undefined;
  /** Accept a client certificate, or say in a few words why not (logged with its subject). */
  checkCertificate(certificate: PresentedCertificate): { readonly accepted: true } | { readonly accepted: false; readonly reason: string };
}

export type CloseReason = 'closed-by-peer' | 'idle' | 'evicted' | 'replaced' | 'revoked' | 'failed' | 'stopped';

export interface DtlsHandlers {
  /** One decrypted datagram from an established session. */
  data(connection: DtlsConnection, plaintext: Buffer): void;
  /** An established session is gone; nothing more can be sent on it. */
  closed?(connection: DtlsConnection, reason: CloseReason): void;
}

export interface DtlsStats {
  /** Established sessions now. */
  sessions: number;
  /** Half-open handshakes now: the peer echoed its cookie and has not finished (dtls.maxHandshakes). */
  handshakesInProgress: number;
  handshakes: number;
  /** Handshakes that ended in an error (timeouts are counted apart), of which the two below. */
  handshakeFailures: number;
  /** The PSK identity is no device's. */
  handshakesRefusedIdentity: number;
  /** The client certificate is neither pinned nor signed by dtls.ca with a registered CN. */
  handshakesRefusedCertificate: number;
  handshakeTimeouts: number;
  helloVerifyRequests: number;
  /** Datagrams from unknown peers that were not a ClientHello (a ClientHello with a bad cookie just gets a new one). */
  droppedDatagrams: number;
  evictions: number;
  /** Handshakes refused (before or at their end) because dtls.maxSessions established sessions leave no room. */
  refusedTableFull: number;
  /** Half-open handshakes dropped or refused by their pool, by reason (none of them counts as a failure above). */
  handshakesDropped: Record<DropReason, number>;
}

/** A session, from the verified ClientHello to close. */
export class DtlsConnection {
  established = false;
  closed = false;
  /** Set when the handshake completes (undefined: a certificate-suite session without client certificate). */
  credential: PeerCredential | undefined;
  cipher = '';
  /** Largest plaintext one datagram carries. */
  maxPlaintext = 0;
  readonly startedAt = Date.now();
  lastActivity = Date.now();
  /** What the handshake got as far as, for the log line when it fails or times out. */
  offeredIdentity: string | undefined;
  identityKnown = false;
  refusedCertificate: { readonly certificate: PresentedCertificate; readonly reason: string } | undefined;
  retransmitTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly server: DtlsServer,
    /** "[address]:port" / "address:port": the session table's key, also how logs name the peer. */
    readonly key: string,
    readonly address: string,
    readonly port: number,
    readonly session: NativeSession,
    /** Of the ClientHello that made this session: a copy of that hello arriving late is not a new handshake. */
    readonly clientRandom: Buffer,
    /**
     * The context it was made from. Held so a context replaced by a reload stays alive (with its PSK and
     * certificate callbacks) until its last session ends.
     */
    readonly context: NativeContext,
  ) {}

  /** Encrypts and sends one datagram; false when the session is not (or no longer) usable. */
  send(plaintext: Buffer): boolean {
    return this.server.sendOn(this, plaintext);
  }

  /** Ends the session with close_notify. */
  close(): void {
    this.server.close(this, 'stopped', true);
  }
}

/** Sessions idle for less than this are never evicted to make room: a full table refuses newcomers instead. */
const EVICTABLE_AFTER_IDLE_MS = 60_000;
/**
 * A handshake whose peer has said nothing for this long is stalled, and gives way when handshakes pile up.
 * After the cookie, a PSK handshake needs one round trip: ~1 ms on loopback or a LAN, up to ~1 s over a
 * multi-hop 6LoWPAN mesh; one lost flight adds RFC 6347's initial retransmission timer of 1 s (ours too).
 * 3 s covers both with a margin. Slower handshakes (ECDHE on a class-1 device) lose out only under
 * pressure, and start again.
 */
const STALLED_HANDSHAKE_MS = 3000;
const COOKIE_SECRET_ROTATION_MS = 5 * 60_000;
/**
 * Sessions freed in a burst after which memory goes back to the system once the burst is over. glibc keeps
 * what OpenSSL frees for reuse: after a flood that churned through a full pool of half-open handshakes,
 * measured here ~40 MB stayed with the process; malloc_trim gave it back in ~5 ms (~20 ms with 2,000
 * sessions still open). 256 sessions are ~14 MB: less is not worth a trim.
 */
const RELEASE_MEMORY_AFTER_FREED = 256;

export class DtlsServer {
  readonly stats: DtlsStats = {
    sessions: 0,
    handshakesInProgress: 0,
    handshakes: 0,
    handshakeFailures: 0,
    handshakesRefusedIdentity: 0,
    handshakesRefusedCertificate: 0,
    handshakeTimeouts: 0,
    helloVerifyRequests: 0,
    droppedDatagrams: 0,
    evictions: 0,
    refusedTableFull: 0,
    handshakesDropped: { pool_full: 0, address_limit: 0, stalled: 0 },
  };
  private readonly binding: DtlsBinding;
  private context: NativeContext;
  /** Established sessions by "address:port"; every datagram updates recency, so the least recent is the idlest. */
  private readonly connections: LRUCache<string, DtlsConnection>;
  /** Sessions from the verified ClientHello until established, apart so a flood of them cannot crowd out the above. */
  private readonly handshakes: HalfOpenPool<DtlsConnection>;
  private socket: dgram.Socket | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private rotationTimer: NodeJS.Timeout | undefined;
  private readonly reports: HandshakeReports;
  /** Sessions freed since memory last went back to the system, and as of the sweep before. */
  private freedSinceRelease = 0;
  private freedAtLastSweep = 0;
  /** Datagrams handed to the socket whose send has not completed, and who waits for them to reach zero. */
  private sending = 0;
  private sendsDone: Array<() => void> = [];

  /** Throws (with OpenSSL's reason, naming cert, key, ca or ciphers) when the material is unusable. */
  constructor(
    private readonly options: DtlsServerOptions,
    private readonly policy: DtlsPolicy,
    private readonly handlers: DtlsHandlers,
    private readonly log: Logger,
  ) {
    this.binding = loadDtlsBinding();
    this.connections = boundedCache(options.maxSessions);
    this.handshakes = new HalfOpenPool({
      capacity: options.maxHandshakes,
      perAddress: options.maxHandshakesPerAddress,
      stalledAfterMs: options.stalledHandshakeMs ?? STALLED_HANDSHAKE_MS,
    });
    this.reports = new HandshakeReports(options, this.stats, this.handshakes, log);
    this.context = this.createContext(options);
  }

  /**
   * New certificate, key and CA for handshakes from now on (a reload). Sessions already established keep
   * theirs. Throws, like the constructor, when OpenSSL refuses the material; the old context then stays.
   */
  replaceCredentials(material: Pick<DtlsServerOptions, 'cert' | 'key' | 'ca' | 'requestClientCert'>): void {
    this.context = this.createContext({ ...this.options, ...material });
  }

  /** Ends (with close_notify) every session whose peer credential the predicate rejects; returns how many. */
  closeWhere(shouldClose: (connection: DtlsConnection) => boolean): number {
    let closed = 0;
    for (const connection of [...this.connections.values()]) {
      if (shouldClose(connection)) {
        this.close(connection, 'revoked', true);
        closed++;
      }
    }
    return closed;
  }

  private createContext(options: DtlsServerOptions): NativeContext {
    return this.binding.createContext(
      {
        cert: options.cert,
        key: options.key,
        ca: options.ca,
        ciphers: options.ciphers,
        securityLevel: options.securityLevel,
        mtu: options.mtu,
        requestClientCert: options.requestClientCert || options.requireClientCert,
        requireClientCert: options.requireClientCert,
        tickets: options.sessionTickets,
      },
      (identity, peerKey) => this.lookUpPsk(identity, peerKey),
      (certificate, peerKey) => this.checkCertificate(certificate, peerKey),
    );
  }

  async start(): Promise<BoundAddress> {
    const bound = await bindUdpSocket(this.options, (datagram, remote) => this.receive(datagram, remote), 'DTLS', this.log);
    this.socket = bound.socket;
    const { handshakeTimeoutMs, idleTimeoutMs } = this.options;
    // Timeouts need no precision: a quarter of the shortest, between 50 ms and 1 s.
    const shortest = Math.min(handshakeTimeoutMs, idleTimeoutMs || Infinity, this.handshakes.limits.stalledAfterMs);
    const sweepMs = Math.min(1000, Math.max(50, Math.floor(shortest / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
    this.rotationTimer = setInterval(() => this.binding.rotateCookieSecret(this.context), COOKIE_SECRET_ROTATION_MS);
    this.rotationTimer.unref();
    return bound.address;
  }

  /** Sends close_notify on every established session, then closes the socket. */
  async stop(): Promise<void> {
    clearInterval(this.sweepTimer);
    clearInterval(this.rotationTimer);
    this.sweepTimer = this.rotationTimer = undefined;
    for (const connection of [...this.connections.values(), ...this.handshakes.values()]) this.close(connection, 'stopped', true);
    const socket = this.socket;
    this.socket = undefined;
    // dgram sends on the next tick: closing the socket now would silently drop the close_notify alerts.
    if (this.sending > 0) await new Promise<void>((resolve) => this.sendsDone.push(resolve));
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  /** The established session of a peer, if any. */
  connection(key: string): DtlsConnection | undefined {
    return this.connections.peek(key);
  }

  private receive(datagram: Buffer, remote: dgram.RemoteInfo): void {
    const key = formatAddress(remote);
    const connection = this.connections.get(key) ?? this.handshakes.get(key);
    const hello = isClientHello(datagram);
    if (connection && !(hello && startsAnotherHandshake(connection, datagram))) {
      this.feed(connection, datagram);
      return;
    }
    // A stranger, or a known peer starting over (a restarted client keeps its address: RFC 6347 §4.2.8).
    // Only a ClientHello is worth OpenSSL's time; the cookie exchange keeps no state until the peer proves
    // it owns its address, and only then may it replace the old session.
    if (!hello) {
      this.stats.droppedDatagrams++;
      return;
    }
    const { datagrams, session } = this.binding.listen(this.context, datagram, key);
    if (datagrams.length > 0) this.stats.helloVerifyRequests++;
    this.transmit(remote.address, remote.port, datagrams);
    if (!session) return;
    if (connection) this.close(connection, 'replaced', false);
    // No handshake that could only end refused; the room itself is made when one is established.
    if (!this.sessionTableHasRoom()) {
      this.reports.tableFull(key);
      this.freeSession(session);
      return;
    }
    const admission = this.handshakes.admit(remote.address, Date.now());
    if (!admission.admitted) {
      this.reports.handshakeDropped(admission.reason, remote.address);
      this.freeSession(session);
      return;
    }
    if (admission.givesWay) {
      this.reports.handshakeDropped(admission.givesWay.reason, admission.givesWay.entry.address);
      this.close(admission.givesWay.entry, 'failed', false);
    }
    const fresh = new DtlsConnection(this, key, remote.address, remote.port, session, Buffer.from(clientHelloRandom(datagram) ?? []), this.context);
    this.handshakes.add(fresh);
    this.stats.handshakesInProgress = this.handshakes.size;
    this.feed(fresh, null);
  }

  private sessionTableHasRoom(): boolean {
    return this.connections.size < this.options.maxSessions || this.evictableSession() !== undefined;
  }

  private evictableSession(): DtlsConnection | undefined {
    const idlest = this.connections.rvalues().next().value;
    const evictableAfterMs = this.options.evictableAfterIdleMs ?? EVICTABLE_AFTER_IDLE_MS;
    return idlest && Date.now() - idlest.lastActivity >= evictableAfterMs ? idlest : undefined;
  }

  /** Room in the session table for one more, evicting the idlest if it has been idle long enough. */
  private makeRoom(key: string): boolean {
    if (this.connections.size < this.options.maxSessions) return true;
    const idlest = this.evictableSession();
    if (idlest) {
      this.stats.evictions++;
      this.log.debug({ peer: idlest.key }, 'DTLS session evicted to make room for a new one');
      this.close(idlest, 'evicted', true);
      return true;
    }
    this.reports.tableFull(key);
    return false;
  }

  private handshakeOrSessionFailed(connection: DtlsConnection, outcome: FeedOutcome): void {
    const wasEstablished = connection.established;
    this.close(connection, 'failed', false);
    if (wasEstablished) this.log.debug({ peer: connection.key, reason: outcome.error }, 'DTLS session failed');
    else this.reports.handshakeFailed(connection, outcome);
  }

  private feed(connection: DtlsConnection, datagram: Buffer | null): void {
    let outcome: FeedOutcome;
    try {
      outcome = this.binding.feed(connection.session, datagram);
    } catch (error) {
      this.log.error({ err: error, peer: connection.key }, 'DTLS engine error; session dropped');
      this.close(connection, 'failed', false);
      return;
    }
    if (connection.established) connection.lastActivity = Date.now();
    else this.handshakes.touch(connection, Date.now());
    this.transmit(connection.address, connection.port, outcome.datagrams);
    if (outcome.error !== null) {
      this.handshakeOrSessionFailed(connection, outcome);
      return;
    }
    if (outcome.handshakeDone) this.established(connection);
    else if (!connection.established) this.scheduleRetransmission(connection);
    for (const plaintext of outcome.data) {
      if (connection.closed) break;
      try {
        this.handlers.data(connection, plaintext);
      } catch (error) {
        // A bug above us must not take the socket's message handler (and every other session) down.
        this.log.error({ err: error, peer: connection.key }, 'DTLS data handler failed');
      }
    }
    if (outcome.closed) this.close(connection, 'closed-by-peer', false);
  }

  private established(connection: DtlsConnection): void {
    clearTimeout(connection.retransmitTimer);
    connection.retransmitTimer = undefined;
    this.handshakes.delete(connection);
    this.stats.handshakesInProgress = this.handshakes.size;
    // Established sessions filled the table while this one was handshaking: tell the device now
    // (close_notify) rather than let it find out by timeouts.
    if (!this.makeRoom(connection.key)) {
      this.transmit(connection.address, connection.port, this.binding.shutdown(connection.session));
      this.close(connection, 'failed', false);
      return;
    }
    this.connections.set(connection.key, connection);
    this.stats.sessions = this.connections.size;
    const info = this.binding.info(connection.session);
    connection.established = true;
    connection.cipher = info.cipher ?? '';
    connection.maxPlaintext = info.dataMtu;
    if (info.pskIdentity !== null) connection.credential = { kind: 'psk', identity: info.pskIdentity };
    else if (info.certificate) {
      const { fingerprint256, commonName, subject } = info.certificate;
      connection.credential = { kind: 'certificate', fingerprint256, commonName: commonName ?? undefined, subject };
    }
    this.stats.handshakes++;
    this.log.debug(
      { peer: connection.key, cipher: connection.cipher, resumed: info.resumed, ...describeCredential(connection.credential) },
      'DTLS session established',
    );
  }

  private scheduleRetransmission(connection: DtlsConnection): void {
    clearTimeout(connection.retransmitTimer);
    const due = this.binding.timeout(connection.session);
    if (due < 0) return;
    connection.retransmitTimer = setTimeout(() => {
      connection.retransmitTimer = undefined;
      if (connection.closed || connection.established) return;
      const outcome = this.binding.handleTimeout(connection.session);
      this.transmit(connection.address, connection.port, outcome.datagrams);
      if (outcome.error !== null) this.handshakeOrSessionFailed(connection, outcome);
      else this.scheduleRetransmission(connection);
    }, Math.ceil(due));
    connection.retransmitTimer.unref();
  }

  /** @internal DtlsConnection.send */
  sendOn(connection: DtlsConnection, plaintext: Buffer): boolean {
    if (!connection.established || connection.closed) return false;
    let datagrams: Buffer[];
    try {
      datagrams = this.binding.write(connection.session, plaintext);
    } catch (error) {
      this.log.debug({ err: error, peer: connection.key }, 'DTLS write failed; session dropped');
      this.close(connection, 'failed', false);
      return false;
    }
    this.transmit(connection.address, connection.port, datagrams);
    return true;
  }

  /** @internal Frees a session once; `notify` sends close_notify first (not after a failure or replacement). */
  close(connection: DtlsConnection, reason: CloseReason, notify: boolean): void {
    if (connection.closed) return;
    connection.closed = true;
    clearTimeout(connection.retransmitTimer);
    connection.retransmitTimer = undefined;
    if (notify && connection.established) this.transmit(connection.address, connection.port, this.binding.shutdown(connection.session));
    this.freeSession(connection.session);
    if (this.connections.peek(connection.key) === connection) this.connections.delete(connection.key);
    this.handshakes.delete(connection);
    this.stats.sessions = this.connections.size;
    this.stats.handshakesInProgress = this.handshakes.size;
    if (connection.established) this.handlers.closed?.(connection, reason);
  }

  private sweep(): void {
    const now = Date.now();
    const { handshakeTimeoutMs, idleTimeoutMs } = this.options;
    for (const connection of this.handshakes.stalled(now)) {
      this.reports.handshakeDropped('stalled', connection.address);
      this.close(connection, 'failed', false);
    }
    for (const connection of [...this.handshakes.values()]) {
      if (now - connection.startedAt >= handshakeTimeoutMs) this.handshakeTimedOut(connection);
    }
    if (idleTimeoutMs > 0) {
      for (const connection of [...this.connections.values()]) {
        if (now - connection.lastActivity >= idleTimeoutMs) {
          this.log.debug({ peer: connection.key }, 'DTLS session closed after dtls.idleTimeoutMs without traffic');
          this.close(connection, 'idle', true);
        }
      }
    }
    this.releaseMemoryAfterBurst();
  }

  private freeSession(session: NativeSession): void {
    this.binding.free(session);
    this.freedSinceRelease++;
  }

  /** After a burst of freed sessions, once a whole sweep interval has passed without one: not during a flood. */
  private releaseMemoryAfterBurst(): void {
    const quiet = this.freedSinceRelease === this.freedAtLastSweep;
    this.freedAtLastSweep = this.freedSinceRelease;
    if (!quiet || this.freedSinceRelease < RELEASE_MEMORY_AFTER_FREED) return;
    const released = this.binding.releaseFreedMemory();
    this.log.debug({ sessionsFreed: this.freedSinceRelease, released }, 'DTLS: memory of freed sessions handed back to the system');
    this.freedSinceRelease = this.freedAtLastSweep = 0;
  }

  private handshakeTimedOut(connection: DtlsConnection): void {
    this.close(connection, 'failed', false);
    this.reports.handshakeTimedOut(connection);
  }

  private lookUpPsk(identity: string, peerKey: string): Buffer | undefined {
    const key = this.policy.pskKey(identity);
    const connection = this.handshakes.get(peerKey);
    if (connection) {
      connection.offeredIdentity = identity;
      connection.identityKnown = key !== undefined;
    }
    return key;
  }

  private checkCertificate(certificate: PresentedCertificate, peerKey: string): boolean {
    const verdict = this.policy.checkCertificate(certificate);
    if (!verdict.accepted) {
      const connection = this.handshakes.get(peerKey);
      if (connection) connection.refusedCertificate = { certificate, reason: verdict.reason };
    }
    return verdict.accepted;
  }

  private transmit(address: string, port: number, datagrams: readonly Buffer[]): void {
    const socket = this.socket;
    if (!socket) return;
    for (const datagram of datagrams) {
      this.sending++;
      socket.send(datagram, port, address, (error) => {
        if (error) this.log.debug({ err: error, peer: formatAddress({ address, port }) }, 'DTLS send failed');
        if (--this.sending === 0) for (const resolve of this.sendsDone.splice(0)) resolve();
      });
    }
  }
}

/**
 * A ClientHello from a peer that has a session is a new handshake only with a new client random: the same
 * one is a retransmission or a late duplicate, which must neither reset a handshake in progress nor
 * replace an established session.
 */
function startsAnotherHandshake(connection: DtlsConnection, hello: Buffer): boolean {
  const random = clientHelloRandom(hello);
  return random !== undefined && !random.equals(connection.clientRandom);
}

/** Log fields naming who a session belongs to: never a key. */
export function describeCredential(credential: PeerCredential | undefined): Record<string, string> {
  if (!credential) return { identity: '(none: token in path)' };
  if (credential.kind === 'psk') return { pskIdentity: credential.identity };
  return { certificate: credential.subject, fingerprint256: credential.fingerprint256 };
}
