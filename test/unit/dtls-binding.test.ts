// The native DTLS engine on its own, in memory: datagrams are shuttled between a client session and a server
// context in JavaScript, so what each side produces can be inspected, dropped or misaddressed at will.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isClientHello,
  loadDtlsBinding,
  type CertificateCheck,
  type ContextOptions,
  type FeedOutcome,
  type NativeContext,
  type NativeSession,
  type PresentedCertificate,
  type PskLookup,
} from '../../src/dtls/native.js';
import { clientHello, helloVerifyCookie } from '../helpers/dtls-flooder.js';
import { sleep } from '../helpers/ports.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

const binding = loadDtlsBinding();

const PSK_IDENTITY = 'sensor-1';
const PSK_KEY = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
const PEER = '192.0.2.10:40001';

const CONTENT_HANDSHAKE = 22;
const CONTENT_ALERT = 21;
const HELLO_VERIFY_REQUEST = 3;

let dir: string;
let pki: TestPki;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-dtls-binding-'));
  pki = makeTestPki(dir);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refuseAll: PskLookup = () => undefined;
const acceptAll: CertificateCheck = () => true;

function serverContext(options: Partial<ContextOptions> = {}, psk: PskLookup = () => PSK_KEY, verify: CertificateCheck = acceptAll): NativeContext {
  return binding.createContext({ ciphers: 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256', securityLevel: 2, mtu: 1232, ...options }, psk, verify);
}

/** A client session offering the test PSK (used only when a PSK suite is negotiated). */
const connect = (context: NativeContext, peerKey = 'server') => binding.connect(context, peerKey, PSK_IDENTITY, PSK_KEY);

function clientContext(options: Partial<ContextOptions> = {}): NativeContext {
  return binding.createContext(
    {
      client: true,
      ciphers: 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256',
      securityLevel: 0,
      mtu: 1232,
      ...options,
    },
    refuseAll,
    acceptAll,
  );
}

/** Content types of the DTLS records packed in one datagram (13-byte headers, length in bytes 11-12). */
function recordTypes(datagram: Buffer): number[] {
  const types: number[] = [];
  for (let at = 0; at + 13 <= datagram.length; at += 13 + datagram.readUInt16BE(at + 11)) types.push(datagram[at]!);
  return types;
}

/**
 * One client and one server over an in-memory "network": the client's flights go through listen() until the
 * cookie exchange yields a server session, then through feed(). Every datagram and outcome is recorded.
 */
class Wire {
  readonly client: NativeSession;
  server: NativeSession | null = null;
  readonly toServer: Buffer[] = [];
  readonly toClient: Buffer[] = [];
  readonly sentByClient: Buffer[] = [];
  readonly sentByServer: Buffer[] = [];
  readonly clientOutcomes: FeedOutcome[] = [];
  readonly serverOutcomes: FeedOutcome[] = [];
  /** Return true to lose a datagram the server sends. */
  dropFromServer: (datagram: Buffer) => boolean = () => false;

  constructor(
    readonly serverCtx: NativeContext,
    readonly clientCtx: NativeContext,
    readonly peer = PEER,
  ) {
    this.client = connect(clientCtx);
    this.fromClient(binding.feed(this.client, null));
  }

  get clientDone(): boolean {
    return this.clientOutcomes.some((o) => o.handshakeDone);
  }

  get serverDone(): boolean {
    return this.serverOutcomes.some((o) => o.handshakeDone);
  }

  fromClient(outcome: FeedOutcome): void {
    this.clientOutcomes.push(outcome);
    this.sentByClient.push(...outcome.datagrams);
    this.toServer.push(...outcome.datagrams);
  }

  fromServer(outcome: FeedOutcome | { datagrams: Buffer[] }): void {
    if ('handshakeDone' in outcome) this.serverOutcomes.push(outcome);
    for (const datagram of outcome.datagrams) {
      this.sentByServer.push(datagram);
      if (!this.dropFromServer(datagram)) this.toClient.push(datagram);
    }
  }

  /** Delivers datagrams both ways until neither side has anything more to say. */
  pump(): void {
    for (let rounds = 0; this.toServer.length > 0 || this.toClient.length > 0; rounds++) {
      if (rounds > 100) throw new Error('the handshake does not settle');
      for (const datagram of this.toServer.splice(0)) {
        if (this.server) {
          this.fromServer(binding.feed(this.server, datagram));
        } else {
          const { datagrams, session } = binding.listen(this.serverCtx, datagram, this.peer);
          this.fromServer({ datagrams });
          if (session) {
            this.server = session;
            this.fromServer(binding.feed(session, null));
          }
        }
      }
      for (const datagram of this.toClient.splice(0)) this.fromClient(binding.feed(this.client, datagram));
    }
  }
}

describe('DTLS binding, PSK', () => {
  it('completes a PSK handshake on CCM_8 by server preference and carries data both ways', () => {
    const lookups: Array<[string, string]> = [];
    const server = serverContext({}, (identity, peer) => {
      lookups.push([identity, peer]);
      return identity === PSK_IDENTITY ? PSK_KEY : undefined;
    });
    // The client ranks GCM and ChaCha20 first, as libcoap's clients do.
    const wire = new Wire(server, clientContext({ ciphers: 'PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:PSK-AES128-CCM8' }));
    wire.pump();
    expect(wire.serverDone).toBe(true);
    expect(wire.clientDone).toBe(true);
    expect(lookups).toEqual([[PSK_IDENTITY, PEER]]);

    const info = binding.info(wire.server!);
    expect(info).toMatchObject({ version: 'DTLSv1.2', cipher: 'PSK-AES128-CCM8', pskIdentity: PSK_IDENTITY, certificate: null, resumed: false });
    expect(info.dataMtu).toBeGreaterThan(1150);
    expect(info.dataMtu).toBeLessThan(1232);
    expect(binding.info(wire.client).cipher).toBe('PSK-AES128-CCM8');

    const up = binding.write(wire.client, Buffer.from('{"temperature":21.5}'));
    expect(up).toHaveLength(1);
    const received = binding.feed(wire.server!, up[0]!);
    expect(received.data.map(String)).toEqual(['{"temperature":21.5}']);
    expect(received.error).toBeNull();

    const down = binding.write(wire.server!, Buffer.from('2.04 Changed'));
    expect(binding.feed(wire.client, down[0]!).data.map(String)).toEqual(['2.04 Changed']);
    binding.free(wire.server!);
    binding.free(wire.client);
  });

  it('decrypts every record of a datagram that packs several', () => {
    const wire = new Wire(serverContext(), clientContext());
    wire.pump();
    const packed = Buffer.concat([...binding.write(wire.client, Buffer.from('one')), ...binding.write(wire.client, Buffer.from('two'))]);
    expect(binding.feed(wire.server!, packed).data.map(String)).toEqual(['one', 'two']);
  });

  it('reads the rest of a datagram after a record it discards: a retransmitted ClientHello packed before the next flight', () => {
    // Regression: OpenSSL drops a record whose version is not the negotiated one (a retransmitted
    // ClientHello still says DTLS 1.0) and with it everything after it in the same read.
    const server = serverContext();
    const client = connect(clientContext());
    const [hello] = binding.feed(client, null).datagrams;
    const [helloWithCookie] = binding.feed(client, binding.listen(server, hello!, PEER).datagrams[0]!).datagrams;
    const { session } = binding.listen(server, helloWithCookie!, PEER);
    const flight5 = binding.feed(session!, null).datagrams.flatMap((datagram) => binding.feed(client, datagram).datagrams);
    const retransmittedHello = Buffer.from(helloWithCookie!);
    retransmittedHello[10] = retransmittedHello[10]! + 8; // a later record sequence number, as a retransmission has
    expect(retransmittedHello.readUInt16BE(1)).toBe(0xfeff);
    const outcome = binding.feed(session!, Buffer.concat([retransmittedHello, ...flight5]));
    expect(outcome.error).toBeNull();
    expect(outcome.handshakeDone).toBe(true);
  });

  it('lets an exception from the PSK callback out of feed()', () => {
    const wire = new Wire(
      serverContext({}, () => {
        throw new Error('device registry unavailable');
      }),
      clientContext(),
    );
    expect(() => wire.pump()).toThrow('device registry unavailable');
  });

  it('refuses an unknown PSK identity with an alert', () => {
    const wire = new Wire(serverContext({}, refuseAll), clientContext());
    wire.pump();
    const failed = wire.serverOutcomes.find((o) => o.error !== null);
    expect(failed).toBeDefined();
    expect(failed!.identityRefused).toBe(true);
    expect(failed!.handshakeDone).toBe(false);
    // The alert goes out with the failing outcome and the client learns why.
    expect(failed!.datagrams.flatMap(recordTypes)).toContain(CONTENT_ALERT);
    expect(wire.clientOutcomes.some((o) => o.error !== null)).toBe(true);
    expect(wire.clientDone).toBe(false);
  });

  it('shows a wrong key as nothing at all: no error, no alert, the handshake just never completes', () => {
    const wire = new Wire(serverContext({}, () => Buffer.from('ffffffffffffffffffffffffffffffff', 'hex')), clientContext());
    wire.pump();
    expect(wire.server).not.toBeNull();
    expect(wire.serverOutcomes.every((o) => o.error === null && !o.identityRefused)).toBe(true);
    expect(wire.clientOutcomes.every((o) => o.error === null)).toBe(true);
    expect(wire.serverDone).toBe(false);
    expect(wire.clientDone).toBe(false);
    expect(wire.sentByServer.flatMap(recordTypes)).not.toContain(CONTENT_ALERT);
    // Still handshaking: the retransmission timer runs, which is how the server's owner times it out.
    expect(binding.timeout(wire.server!)).toBeGreaterThanOrEqual(0);
  });

  it('answers close_notify with its own and reports the session closed', () => {
    const wire = new Wire(serverContext(), clientContext());
    wire.pump();
    const bye = binding.shutdown(wire.client);
    expect(bye.flatMap(recordTypes)).toEqual([CONTENT_ALERT]);
    const outcome = binding.feed(wire.server!, bye[0]!);
    expect(outcome.closed).toBe(true);
    expect(outcome.error).toBeNull();
    expect(outcome.datagrams.flatMap(recordTypes)).toEqual([CONTENT_ALERT]);
    expect(binding.feed(wire.client, outcome.datagrams[0]!).closed).toBe(true);
    binding.free(wire.server!);
    binding.free(wire.client);
  });
});

describe('DTLS binding, cookie exchange', () => {
  const firstHello = (): Buffer => {
    const client = connect(clientContext());
    const [hello] = binding.feed(client, null).datagrams;
    binding.free(client);
    return hello!;
  };

  it('answers a first ClientHello with one HelloVerifyRequest and keeps no session', () => {
    const hello = firstHello();
    expect(isClientHello(hello)).toBe(true);
    const { datagrams, session } = binding.listen(serverContext(), hello, PEER);
    expect(session).toBeNull();
    expect(datagrams).toHaveLength(1);
    const [hvr] = datagrams;
    expect(recordTypes(hvr!)).toEqual([CONTENT_HANDSHAKE]);
    expect(hvr![13]).toBe(HELLO_VERIFY_REQUEST);
    // No amplification: the answer is smaller than the hello.
    expect(hvr!.length).toBeLessThan(hello.length);
  });

  it('keeps no state for a flood of ClientHellos from spoofed addresses', () => {
    const server = serverContext();
    const hello = firstHello();
    const before = process.memoryUsage().rss;
    let sessions = 0;
    let answers = 0;
    for (let i = 0; i < 5000; i++) {
      const { datagrams, session } = binding.listen(server, hello, `10.${(i >> 8) & 255}.${i & 255}.1:${1024 + i}`);
      if (session) sessions++;
      answers += datagrams.length;
    }
    expect(sessions).toBe(0);
    expect(answers).toBe(5000);
    // A stateful server would hold ~70 KB per hello (350 MB here); the listener holds nothing.
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
  });

  it('accepts a cookie only from the peer it was made for', () => {
    const server = serverContext();
    const client = connect(clientContext());
    const [hello] = binding.feed(client, null).datagrams;
    const { datagrams: hvr } = binding.listen(server, hello!, PEER);
    const [helloWithCookie] = binding.feed(client, hvr[0]!).datagrams;
    expect(isClientHello(helloWithCookie!)).toBe(true);

    const elsewhere = binding.listen(server, helloWithCookie!, '198.51.100.7:40001');
    expect(elsewhere.session).toBeNull();
    // Treated as a hello without a (valid) cookie: a fresh HelloVerifyRequest for the other address.
    expect(elsewhere.datagrams.map((d) => d[13])).toEqual([HELLO_VERIFY_REQUEST]);

    const rightful = binding.listen(server, helloWithCookie!, PEER);
    expect(rightful.session).not.toBeNull();
    binding.free(rightful.session!);
    binding.free(client);
  });

  it('still accepts a cookie made before one secret rotation, not before two', () => {
    const server = serverContext();
    const client = connect(clientContext());
    const [hello] = binding.feed(client, null).datagrams;
    const [helloWithCookie] = binding.feed(client, binding.listen(server, hello!, PEER).datagrams[0]!).datagrams;
    binding.rotateCookieSecret(server);
    const once = binding.listen(server, helloWithCookie!, PEER);
    expect(once.session).not.toBeNull();
    binding.free(once.session!);
    binding.rotateCookieSecret(server);
    expect(binding.listen(server, helloWithCookie!, PEER).session).toBeNull();
    binding.free(client);
  });
});

describe('DTLS binding, certificates', () => {
  const CERT_SUITES = 'ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256';

  function certificateWire(mtu: number, verify: CertificateCheck, client = pki.client): Wire {
    const server = serverContext(
      { cert: pki.server.cert, key: pki.server.key, ca: readFileSync(pki.caFile, 'utf8'), ciphers: CERT_SUITES, mtu, requestClientCert: true, requireClientCert: true },
      refuseAll,
      verify,
    );
    return new Wire(server, clientContext({ cert: client.cert, key: client.key, ciphers: CERT_SUITES, mtu }));
  }

  it('fragments every flight to a small MTU and still completes, asking JavaScript about the client certificate', () => {
    const presented: Array<[PresentedCertificate, string]> = [];
    const mtu = 300;
    const wire = certificateWire(mtu, (certificate, peer) => {
      presented.push([certificate, peer]);
      return true;
    });
    wire.pump();
    expect(wire.serverDone).toBe(true);
    expect(wire.clientDone).toBe(true);
    for (const datagram of [...wire.sentByClient, ...wire.sentByServer]) expect(datagram.length).toBeLessThanOrEqual(mtu);
    // Certificates do not fit in 300 bytes: the flights really were fragmented.
    expect(wire.sentByServer.length).toBeGreaterThan(3);
    expect(wire.sentByClient.length).toBeGreaterThan(3);

    expect(presented).toHaveLength(1);
    const [certificate, peer] = presented[0]!;
    expect(peer).toBe(PEER);
    expect(certificate).toEqual({
      subject: 'CN=sensor-ca-1',
      commonName: 'sensor-ca-1',
      fingerprint256: pki.client.fingerprint256.replaceAll(':', '').toLowerCase(),
      chainError: null,
    });
    const info = binding.info(wire.server!);
    expect(info.cipher).toBe('ECDHE-ECDSA-AES128-CCM8');
    expect(info.pskIdentity).toBeNull();
    expect(info.certificate).toEqual({ subject: 'CN=sensor-ca-1', commonName: 'sensor-ca-1', fingerprint256: certificate.fingerprint256 });
  });

  it('reports why an untrusted chain failed and lets JavaScript refuse it', () => {
    const presented: PresentedCertificate[] = [];
    const wire = certificateWire(
      1232,
      (certificate) => {
        presented.push(certificate);
        return false;
      },
      pki.rogue,
    );
    wire.pump();
    expect(presented).toHaveLength(1);
    expect(presented[0]!.chainError).toMatch(/issuer certificate/);
    const failed = wire.serverOutcomes.find((o) => o.error !== null);
    expect(failed).toBeDefined();
    expect(failed!.certificateRefused).toBe(true);
    expect(failed!.identityRefused).toBe(false);
    expect(failed!.datagrams.flatMap(recordTypes)).toContain(CONTENT_ALERT);
    expect(wire.serverDone).toBe(false);
  });
});

describe('DTLS binding, retransmission', () => {
  it('retransmits a lost server flight when its timer expires, and stops the timer once established', async () => {
    const wire = new Wire(serverContext(), clientContext());
    let lost = 0;
    // Lose the server's first flight after the cookie exchange (ServerHello ... ServerHelloDone).
    wire.dropFromServer = (datagram) => wire.server !== null && lost++ === 0 && datagram[13] !== HELLO_VERIFY_REQUEST;
    wire.pump();
    expect(lost).toBe(1);
    expect(wire.serverDone).toBe(false);
    const due = binding.timeout(wire.server!);
    expect(due).toBeGreaterThanOrEqual(0);
    expect(due).toBeLessThanOrEqual(1000);

    // Too early: nothing to retransmit yet.
    expect(binding.handleTimeout(wire.server!).datagrams).toEqual([]);
    await sleep(due + 20);
    const retransmitted = binding.handleTimeout(wire.server!);
    expect(retransmitted.error).toBeNull();
    expect(retransmitted.datagrams.length).toBeGreaterThan(0);
    wire.fromServer(retransmitted);
    wire.pump();
    expect(wire.serverDone).toBe(true);
    expect(wire.clientDone).toBe(true);
    expect(binding.timeout(wire.server!)).toBe(-1);
  });
});

describe('DTLS binding, memory', () => {
  it('hands the memory of freed sessions back to the system (glibc) after a burst of half-open handshakes', () => {
    const server = serverContext();
    const sessions: NativeSession[] = [];
    for (let i = 0; i < 300; i++) {
      const peer = `10.9.${i >> 8}.${i & 255}:5000`;
      const random = Buffer.alloc(32, i & 255);
      const cookie = helloVerifyCookie(binding.listen(server, clientHello({ random }), peer).datagrams[0]!);
      const { session } = binding.listen(server, clientHello({ random, cookie, messageSeq: 1, recordSeq: 1 }), peer);
      expect(session).not.toBeNull();
      // The server's first flight: the session now holds its buffers and handshake state.
      expect(binding.feed(session!, null).datagrams.length).toBeGreaterThan(0);
      sessions.push(session!);
    }
    for (const session of sessions) binding.free(session);
    const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime !== undefined;
    expect(binding.releaseFreedMemory()).toBe(glibc);
  });
});

describe('DTLS binding, misuse', () => {
  it('throws a clear error when a freed session is used', () => {
    const session = connect(clientContext());
    binding.free(session);
    expect(() => binding.feed(session, null)).toThrow('DTLS session already freed');
    expect(() => binding.timeout(session)).toThrow('DTLS session already freed');
    // Freeing twice is harmless.
    expect(() => binding.free(session)).not.toThrow();
  });

  it('refuses a context where a session belongs, and anything else that is not its own handle', () => {
    const context = clientContext();
    expect(() => binding.free(context as never)).toThrow('not a DTLS session');
    expect(() => binding.feed({} as never, null)).toThrow('not a DTLS session');
    expect(() => binding.listen(binding.connect(context, 'x') as never, Buffer.alloc(30), 'peer')).toThrow('not a DTLS context');
  });

  it('names the bad input when a context cannot be created', () => {
    expect(() => serverContext({ cert: pki.server.cert, key: 'not a key' })).toThrow(/^key: /);
    expect(() => serverContext({ cert: pki.server.cert, key: pki.client.key })).toThrow(/^key: /);
    expect(() => serverContext({ cert: 'not a cert', key: pki.server.key })).toThrow(/^cert: /);
    expect(() => serverContext({ ciphers: 'NO-SUCH-CIPHER' })).toThrow(/^ciphers: /);
    expect(() => serverContext({ ca: 'not a cert' })).toThrow(/^ca: /);
    // Below OpenSSL's floor of 256 sessions would stall without a word.
    expect(() => serverContext({ mtu: 200 })).toThrow(/^mtu: /);
  });
});
