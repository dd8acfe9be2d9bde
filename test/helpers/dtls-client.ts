// A DTLS 1.2 client over UDP on the binding's client role: for tests of the server and the benchmark's load
// generator (Node has no DTLS client, and libcoap's clients are processes, too slow to start by the thousand).
import dgram from 'node:dgram';
import {
  loadDtlsBinding,
  type FeedOutcome,
  type NativeContext,
  type NativeSession,
  type SessionInfo,
} from '../../src/dtls/native.js';

export interface DtlsClientOptions {
  readonly host: string;
  readonly port: number;
  readonly pskIdentity?: string;
  readonly pskKey?: Buffer;
  /** PEM client certificate and key, for certificate suites. */
  readonly cert?: string;
  readonly key?: string;
  readonly ciphers?: string;
  readonly mtu?: number;
  /** Bind the client's socket to this local port (0: any). */
  readonly localPort?: number;
  /**
   * A context from DtlsClient.context(options) to share between clients: creating one costs ~150 µs,
   * which a load generator opening thousands of sessions should not pay each time.
   */
  readonly context?: NativeContext;
  /** Keep decrypted datagrams in `received` (default true; a load generator turns it off). */
  readonly keepReceived?: boolean;
  /** Keep every datagram sent in `sent`, to replay one later. */
  readonly recordSent?: boolean;
}

export class DtlsClient {
  readonly received: Buffer[] = [];
  /** With recordSent: every datagram this client sent, in order. */
  readonly sent: Buffer[] = [];
  info: SessionInfo | undefined;
  /** Set when the server sent close_notify or the session failed. */
  closedBy: 'peer' | 'error' | undefined;
  error: string | null = null;
  private listeners: Array<(data: Buffer) => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private handshake: { resolve: () => void; reject: (error: Error) => void } | undefined;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly session: NativeSession,
    private readonly options: DtlsClientOptions,
    /** Kept referenced: the session's SSL_CTX callbacks live in it. */
    readonly context: NativeContext,
  ) {}

  /** The OpenSSL client context these options describe (certificate, ciphers, MTU; the PSK is per session). */
  static context(options: Pick<DtlsClientOptions, 'cert' | 'key' | 'ciphers' | 'mtu'>): NativeContext {
    return loadDtlsBinding().createContext(
      {
        client: true,
        cert: options.cert,
        key: options.key,
        ciphers: options.ciphers ?? 'PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256',
        securityLevel: 0,
        mtu: options.mtu ?? 1232,
      },
      () => undefined,
      () => true,
    );
  }

  /** Handshakes (retransmitting as OpenSSL says) and resolves when established; rejects on failure or timeout. */
  static async connect(options: DtlsClientOptions, timeoutMs = 5000): Promise<DtlsClient> {
    const binding = loadDtlsBinding();
    const context = options.context ?? DtlsClient.context(options);
    const socket = dgram.createSocket(options.host.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve) => socket.bind(options.localPort ?? 0, resolve));
    const session = binding.connect(context, `${options.host}:${options.port}`, options.pskIdentity, options.pskKey);
    const client = new DtlsClient(socket, session, options, context);
    socket.on('message', (datagram) => client.apply(binding.feed(client.session, datagram)));
    const established = new Promise<void>((resolve, reject) => (client.handshake = { resolve, reject }));
    const deadline = setTimeout(() => client.fail('handshake timed out'), timeoutMs);
    client.apply(binding.feed(client.session, null));
    try {
      await established;
    } catch (error) {
      await client.close();
      throw error;
    } finally {
      clearTimeout(deadline);
    }
    return client;
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  send(plaintext: Buffer): void {
    this.transmit(loadDtlsBinding().write(this.session, plaintext));
  }

  /** Sends bytes as they are, outside the session (a spoofed or garbage datagram from this address). */
  sendRaw(datagram: Buffer): void {
    this.socket.send(datagram, this.options.port, this.options.host);
  }

  onData(listener: (data: Buffer) => void): void {
    this.listeners.push(listener);
  }

  /** Resolves with the next decrypted datagram. */
  next(timeoutMs = 5000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no DTLS data within the timeout')), timeoutMs);
      const listener = (data: Buffer) => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        resolve(data);
      };
      this.listeners.push(listener);
    });
  }

  /** close_notify (unless `silently`: a device that just vanishes), then closes the socket. */
  async close(silently = false): Promise<void> {
    clearTimeout(this.timer);
    const binding = loadDtlsBinding();
    try {
      if (!silently && this.info && !this.closedBy) {
        // dgram sends on the next tick: wait, or closing the socket drops the close_notify.
        const bye = binding.shutdown(this.session);
        await Promise.all(bye.map((datagram) => new Promise((resolve) => this.socket.send(datagram, this.options.port, this.options.host, resolve))));
      }
      binding.free(this.session);
    } catch {
      // Already freed.
    }
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }

  private apply(outcome: FeedOutcome): void {
    this.transmit(outcome.datagrams);
    if (outcome.error !== null) {
      this.error = outcome.error;
      this.closedBy = 'error';
      this.fail(outcome.error);
      return;
    }
    if (outcome.handshakeDone) {
      clearTimeout(this.timer);
      this.info = loadDtlsBinding().info(this.session);
      this.handshake?.resolve();
      this.handshake = undefined;
    } else if (!this.info) {
      this.schedule();
    }
    for (const data of outcome.data) {
      if (this.options.keepReceived !== false) this.received.push(data);
      for (const listener of [...this.listeners]) listener(data);
    }
    if (outcome.closed) this.closedBy = 'peer';
  }

  private schedule(): void {
    clearTimeout(this.timer);
    const due = loadDtlsBinding().timeout(this.session);
    if (due < 0) return;
    this.timer = setTimeout(() => this.apply(loadDtlsBinding().handleTimeout(this.session)), Math.ceil(due));
  }

  private fail(reason: string): void {
    clearTimeout(this.timer);
    this.handshake?.reject(new Error(reason));
    this.handshake = undefined;
  }

  private transmit(datagrams: readonly Buffer[]): void {
    if (this.options.recordSent) this.sent.push(...datagrams);
    for (const datagram of datagrams) this.socket.send(datagram, this.options.port, this.options.host);
  }
}
