// Raw DTLS 1.2 ClientHellos and a flooder that leaves half-open handshakes behind: each of its "clients" (a
// socket of its own, so a distinct source port) sends a ClientHello, echoes the cookie of the
// HelloVerifyRequest as a real client must (RFC 6347 §4.2.1), then never says another word. That is the
// cheapest way to make a DTLS server create per-peer state: the cookie only proves the address is real.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { sleep } from './ports.js';

const RECORD_HEADER = 13;
const HANDSHAKE_HEADER = 12;
const CONTENT_HANDSHAKE = 22;
const HELLO_VERIFY_REQUEST = 3;

export interface ClientHelloFields {
  /** 32 bytes; a retransmission and the second ClientHello (with the cookie) repeat the first's. */
  readonly random?: Buffer;
  readonly cookie?: Buffer;
  /** Handshake message_seq: 0 for the first ClientHello, 1 for the one answering a HelloVerifyRequest. */
  readonly messageSeq?: number;
  /** Record sequence number. */
  readonly recordSeq?: number;
}

/**
 * A minimal DTLS 1.2 ClientHello (RFC 6347 §4.2.2) in one record, offering only PSK-AES128-CCM8 (0xC0A8),
 * no extensions: enough for OpenSSL's DTLSv1_listen and for a PSK server to answer with its ServerHello.
 */
export function clientHello(fields: ClientHelloFields = {}): Buffer {
  const cookie = fields.cookie ?? Buffer.alloc(0);
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]), // client_version DTLS 1.2
    fields.random ?? Buffer.alloc(32, 7),
    Buffer.from([0]), // session_id: none
    Buffer.from([cookie.length]),
    cookie,
    Buffer.from([0x00, 0x02, 0xc0, 0xa8]), // cipher_suites: TLS_PSK_WITH_AES_128_CCM_8
    Buffer.from([1, 0]), // compression_methods: null
  ]);
  const handshake = Buffer.alloc(HANDSHAKE_HEADER);
  handshake[0] = 1; // client_hello
  handshake.writeUIntBE(body.length, 1, 3);
  handshake.writeUInt16BE(fields.messageSeq ?? 0, 4);
  handshake.writeUIntBE(0, 6, 3); // fragment_offset
  handshake.writeUIntBE(body.length, 9, 3); // fragment_length
  const record = Buffer.alloc(RECORD_HEADER);
  record[0] = CONTENT_HANDSHAKE;
  record.writeUInt16BE(0xfefd, 1);
  record.writeUInt16BE(0, 3); // epoch 0
  record.writeUIntBE(fields.recordSeq ?? 0, 5, 6);
  record.writeUInt16BE(HANDSHAKE_HEADER + body.length, 11);
  return Buffer.concat([record, handshake, body]);
}

/** The cookie of a HelloVerifyRequest datagram, or undefined when it is something else. */
export function helloVerifyCookie(datagram: Buffer): Buffer | undefined {
  const at = RECORD_HEADER + HANDSHAKE_HEADER;
  if (datagram.length < at + 3 || datagram[0] !== CONTENT_HANDSHAKE || datagram[RECORD_HEADER] !== HELLO_VERIFY_REQUEST) return undefined;
  const length = datagram[at + 2]!;
  return datagram.length >= at + 3 + length ? datagram.subarray(at + 3, at + 3 + length) : undefined;
}

export interface FloodOptions {
  readonly host: string;
  readonly port: number;
  /** Handshakes to leave half-open, at most. */
  readonly count: number;
  /** Handshakes waiting for their HelloVerifyRequest at once. */
  readonly concurrency: number;
  /** Local addresses to send from, in turn (e.g. several of 127.0.0.0/8: a flood from many hosts). */
  readonly localAddresses: readonly string[];
  /** Stop starting new handshakes after this long. */
  readonly maxDurationMs: number;
  /** A HelloVerifyRequest not back within this is given up (the server is swamped, or the datagram lost). */
  readonly answerTimeoutMs?: number;
  /**
   * Keep every socket open until close() (default), so no source port serves two handshakes; false closes
   * each once its cookie is echoed, for floods larger than the file descriptor limit allows, spread over
   * enough addresses that the kernel rarely hands the same port out again.
   */
  readonly keepSocketsOpen?: boolean;
}

export interface FloodProgress {
  /** Second ClientHellos sent, cookie echoed: each a half-open handshake at the server. */
  echoed: number;
  /** First ClientHellos that got no HelloVerifyRequest in time. */
  unanswered: number;
  elapsedMs: number;
  /** Set when the flood ended: ran its course, was closed, or failed (then `failure` says why). */
  finished: boolean;
  failure?: string;
}

/**
 * Starts a flood of cookie-echoing, then silent, handshakes; the server's retransmissions are ignored.
 */
export class HalfOpenFlood {
  readonly progress: FloodProgress = { echoed: 0, unanswered: 0, elapsedMs: 0, finished: false };
  readonly done: Promise<FloodProgress>;
  private readonly sockets: dgram.Socket[] = [];
  private stopped = false;

  constructor(private readonly options: FloodOptions) {
    this.done = this.run();
  }

  /** Stops starting handshakes, waits for those under way, then closes every socket. */
  async close(): Promise<FloodProgress> {
    this.stopped = true;
    const progress = await this.done;
    await Promise.all(this.sockets.splice(0).map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
    return progress;
  }

  private async run(): Promise<FloodProgress> {
    const startedAt = Date.now();
    let started = 0;
    const worker = async (): Promise<void> => {
      while (!this.stopped && started < this.options.count && Date.now() - startedAt < this.options.maxDurationMs) {
        const localAddress = this.options.localAddresses[started++ % this.options.localAddresses.length]!;
        try {
          if (await this.oneHandshake(localAddress)) this.progress.echoed++;
          else this.progress.unanswered++;
        } catch (error) {
          this.progress.failure ??= (error as Error).message;
          this.stopped = true;
        }
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency }, worker));
    this.progress.elapsedMs = Date.now() - startedAt;
    this.progress.finished = true;
    return this.progress;
  }

  private async oneHandshake(localAddress: string): Promise<boolean> {
    const { host, port } = this.options;
    const socket = dgram.createSocket(localAddress.includes(':') ? 'udp6' : 'udp4');
    const keep = this.options.keepSocketsOpen ?? true;
    const bindError = await new Promise<Error | undefined>((resolve) => {
      socket.once('error', resolve);
      socket.bind(0, localAddress, () => resolve(undefined));
    });
    if (bindError) {
      socket.close();
      throw new Error(`cannot bind a flood socket on ${localAddress}: ${bindError.message} (ulimit -n? keepSocketsOpen: false?)`);
    }
    socket.on('error', () => undefined);
    const random = randomBytes(32);
    const cookie = await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), this.options.answerTimeoutMs ?? 2000);
      socket.on('message', (datagram) => {
        const found = helloVerifyCookie(datagram);
        if (!found) return;
        clearTimeout(timer);
        resolve(Buffer.from(found));
      });
      socket.send(clientHello({ random }), port, host);
    });
    socket.removeAllListeners('message');
    // From here on silent: the server's flight (ServerHello ... ServerHelloDone) and its retransmissions go unread.
    if (cookie) await new Promise<void>((resolve) => socket.send(clientHello({ random, cookie, messageSeq: 1, recordSeq: 1 }), port, host, () => resolve()));
    if (!keep || !cookie) socket.close();
    else this.sockets.push(socket);
    return cookie !== undefined;
  }
}

/** Waits until the flood has echoed `count` cookies; false when it ended or the time ran out first. */
export async function floodReached(flood: HalfOpenFlood, count: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (flood.progress.echoed < count && !flood.progress.finished && Date.now() < deadline) await sleep(10);
  return flood.progress.echoed >= count;
}
