// DtlsServer over real UDP on loopback, driven by the test DTLS client: session table, cookie exchange,
// timeouts, table limits, replacement of a restarted client, close_notify.
import dgram from 'node:dgram';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { isClientHello } from '../../src/dtls/native.js';
import { DtlsServer, type CloseReason, type DtlsConnection, type DtlsServerOptions } from '../../src/dtls/server.js';
import { DtlsClient } from '../helpers/dtls-client.js';
import { HalfOpenFlood } from '../helpers/dtls-flooder.js';
import { eventually, freeUdpPort, sleep } from '../helpers/ports.js';

const KEYS = new Map([
  ['sensor-1', Buffer.from('00112233445566778899aabbccddeeff', 'hex')],
  ['sensor-2', Buffer.from('ffeeddccbbaa99887766554433221100', 'hex')],
]);

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A server on 127.0.0.1 with PSK devices, a log it keeps, and what its handlers saw. */
class Harness {
  readonly logs: LogLine[] = [];
  readonly received: Array<{ connection: DtlsConnection; text: string }> = [];
  readonly closed: Array<{ connection: DtlsConnection; reason: CloseReason }> = [];
  readonly server: DtlsServer;
  port = 0;
  readonly clients: DtlsClient[] = [];

  constructor(options: Partial<DtlsServerOptions> = {}) {
    const log = pino({ level: 'debug' }, { write: (line: string) => void this.logs.push(JSON.parse(line) as LogLine) });
    this.server = new DtlsServer(
      {
        host: '127.0.0.1',
        port: 0,
        socketBufferBytes: 1 << 20,
        cert: undefined,
        key: undefined,
        ca: undefined,
        requestClientCert: false,
        requireClientCert: false,
        ciphers: 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256',
        securityLevel: 2,
        mtu: 1232,
        handshakeTimeoutMs: 1500,
        idleTimeoutMs: 0,
        maxSessions: 100,
        maxHandshakes: 512,
        maxHandshakesPerAddress: 64,
        sessionTickets: false,
        ...options,
      },
      {
        pskKey: (identity) => KEYS.get(identity),
        checkCertificate: () => ({ accepted: false, reason: 'no certificates in these tests' }),
      },
      {
        data: (connection, plaintext) => this.received.push({ connection, text: plaintext.toString() }),
        closed: (connection, reason) => this.closed.push({ connection, reason }),
      },
      log,
    );
  }

  async start(): Promise<this> {
    this.port = (await this.server.start()).port;
    return this;
  }

  async connect(identity = 'sensor-1', extra: { pskKey?: Buffer; localPort?: number; timeoutMs?: number } = {}): Promise<DtlsClient> {
    const client = await DtlsClient.connect(
      { host: '127.0.0.1', port: this.port, pskIdentity: identity, pskKey: extra.pskKey ?? KEYS.get(identity), localPort: extra.localPort },
      extra.timeoutMs ?? 3000,
    );
    this.clients.push(client);
    return client;
  }

  warnings(): string[] {
    return this.logs.filter((line) => line.level === 40).map((line) => line.msg);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.clients.map((client) => client.close(true).catch(() => undefined)));
    await this.server.stop();
  }
}

let harness: Harness | undefined;

/** `count` handshakes that echo their cookie and go silent, from `addresses` in turn; resolves when all are sent. */
async function flood(port: number, count: number, addresses: readonly string[]): Promise<void> {
  const half = new HalfOpenFlood({ host: '127.0.0.1', port, count, concurrency: 8, localAddresses: addresses, maxDurationMs: 5000 });
  const progress = await half.done;
  expect(progress.echoed).toBe(count);
  // Closed by the test's end only: a closed socket would still be a silent peer, but keep it simple.
  floods.push(half);
}
const floods: HalfOpenFlood[] = [];
const MANY_ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.1.${i + 1}`);

async function startServer(options: Partial<DtlsServerOptions> = {}): Promise<Harness> {
  harness = await new Harness(options).start();
  return harness;
}

afterEach(async () => {
  await harness?.dispose();
  harness = undefined;
  await Promise.all(floods.splice(0).map((f) => f.close()));
});

/** Sends raw bytes from a throw-away socket: a stranger the server has never heard from. */
async function sendRaw(port: number, ...datagrams: Buffer[]): Promise<Buffer[]> {
  const socket = dgram.createSocket('udp4');
  const answers: Buffer[] = [];
  socket.on('message', (answer) => answers.push(answer));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  for (const datagram of datagrams) await new Promise<void>((resolve) => socket.send(datagram, port, '127.0.0.1', () => resolve()));
  await sleep(100);
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return answers;
}

describe('DTLS server', () => {
  it('establishes a PSK session and carries datagrams both ways', async () => {
    const h = await startServer();
    const client = await h.connect();
    expect(client.info).toMatchObject({ version: 'DTLSv1.2', cipher: 'PSK-AES128-CCM8', pskIdentity: 'sensor-1' });

    client.send(Buffer.from('POST /telemetry'));
    const { connection, text } = await eventually(() => h.received[0], 2000, 'data at the server');
    expect(text).toBe('POST /telemetry');
    expect(connection.credential).toEqual({ kind: 'psk', identity: 'sensor-1' });
    expect(connection.cipher).toBe('PSK-AES128-CCM8');
    expect(connection.key).toBe(`127.0.0.1:${client.localPort}`);
    expect(h.server.connection(connection.key)).toBe(connection);
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakes: 1, helloVerifyRequests: 1, handshakeFailures: 0 });

    const answer = client.next();
    expect(connection.send(Buffer.from('2.04 Changed'))).toBe(true);
    expect((await answer).toString()).toBe('2.04 Changed');
  });

  it('drops datagrams from unknown peers that are not a ClientHello, and keeps no state for a first ClientHello', async () => {
    const h = await startServer();
    // Application data (content type 23, epoch 1) and garbage from an address with no session.
    const appData = Buffer.concat([Buffer.from([23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 4]), Buffer.from('data')]);
    expect(await sendRaw(h.port, appData, Buffer.from('hello?'))).toEqual([]);
    expect(h.server.stats).toMatchObject({ droppedDatagrams: 2, sessions: 0, helloVerifyRequests: 0 });

    // A ClientHello from the client's first flight gets a HelloVerifyRequest and nothing else.
    const recorder = dgram.createSocket('udp4');
    const hello = await new Promise<Buffer>((resolve) => {
      recorder.on('message', (datagram) => resolve(datagram));
      recorder.bind(0, '127.0.0.1', () => {
        void DtlsClient.connect({ host: '127.0.0.1', port: recorder.address().port, pskIdentity: 'sensor-1', pskKey: KEYS.get('sensor-1') }, 300).catch(
          () => undefined,
        );
      });
    });
    recorder.close();
    const answers = await sendRaw(h.port, hello);
    expect(answers).toHaveLength(1);
    expect(answers[0]![13]).toBe(3); // HelloVerifyRequest
    expect(h.server.stats).toMatchObject({ helloVerifyRequests: 1, sessions: 0, droppedDatagrams: 2 });
  });

  it('abandons a handshake that does not finish in time and hints at a wrong key', async () => {
    const h = await startServer({ handshakeTimeoutMs: 1000 });
    const attempt = h.connect('sensor-1', { pskKey: Buffer.alloc(16, 7), timeoutMs: 1200 }).catch((error: Error) => error);
    await eventually(() => h.server.stats.handshakesInProgress === 1, 2000, 'a handshake in progress');
    await eventually(() => h.server.stats.handshakeTimeouts === 1, 3000, 'the handshake timeout');
    expect(h.server.stats).toMatchObject({ sessions: 0, handshakesInProgress: 0, handshakes: 0, handshakeFailures: 0 });
    const warning = h.logs.find((line) => line.level === 40 && line.msg.startsWith('DTLS handshake timed out'));
    expect(warning?.msg).toMatch(/different key/);
    expect(warning).toMatchObject({ identity: 'sensor-1', timeoutMs: 1000 });
    expect(await attempt).toBeInstanceOf(Error);
  });

  it('refuses an unregistered PSK identity at once, with one warning', async () => {
    const h = await startServer();
    await expect(h.connect('sensor-404', { pskKey: Buffer.alloc(16, 1) })).rejects.toThrow(/unknown psk identity/i);
    await expect(h.connect('sensor-404', { pskKey: Buffer.alloc(16, 1) })).rejects.toThrow();
    expect(h.server.stats).toMatchObject({ sessions: 0, handshakeFailures: 2, handshakeTimeouts: 0 });
    expect(h.warnings().filter((msg) => msg.includes('PSK identity is not registered'))).toHaveLength(1);
  });

  it('closes a session idle for idleTimeoutMs with close_notify', async () => {
    const h = await startServer({ idleTimeoutMs: 400 });
    const client = await h.connect();
    await eventually(() => client.closedBy, 2000, 'close_notify at the client');
    expect(client.closedBy).toBe('peer');
    expect(h.server.stats.sessions).toBe(0);
    expect(h.closed.map((c) => c.reason)).toEqual(['idle']);
  });

  it('notices a client that ends its session with close_notify', async () => {
    const h = await startServer();
    const client = await h.connect();
    h.clients.splice(0);
    await client.close();
    await eventually(() => h.closed.length > 0, 2000, 'the session closed');
    expect(h.closed.map((c) => c.reason)).toEqual(['closed-by-peer']);
    expect(h.server.stats.sessions).toBe(0);
  });

  it('refuses new handshakes when the table is full of recently active sessions', async () => {
    const h = await startServer({ maxSessions: 2 });
    await h.connect('sensor-1');
    await h.connect('sensor-2');
    await expect(h.connect('sensor-1', { timeoutMs: 800 })).rejects.toThrow('handshake timed out');
    expect(h.server.stats.refusedTableFull).toBeGreaterThanOrEqual(1);
    expect(h.server.stats).toMatchObject({ sessions: 2, handshakes: 2, evictions: 0 });
    expect(h.warnings().filter((msg) => msg.startsWith('DTLS session table full'))).toHaveLength(1);
  });

  it('evicts the idlest session to make room once it has been idle long enough', async () => {
    const h = await startServer({ maxSessions: 2, evictableAfterIdleMs: 300 });
    const idlest = await h.connect('sensor-1');
    const other = await h.connect('sensor-2');
    await sleep(350);
    other.send(Buffer.from('still here'));
    await eventually(() => h.received.length === 1, 2000, 'data from the active client');
    const newcomer = await h.connect('sensor-1');
    expect(h.server.stats).toMatchObject({ evictions: 1, sessions: 2, handshakes: 3 });
    await eventually(() => idlest.closedBy, 2000, 'close_notify at the evicted client');
    expect(h.closed.map((c) => [c.connection.key, c.reason])).toEqual([[`127.0.0.1:${idlest.localPort}`, 'evicted']]);
    expect(newcomer.closedBy).toBeUndefined();
    expect(other.closedBy).toBeUndefined();
  });

  it('replaces the session of a client that restarts on the same port', async () => {
    const h = await startServer();
    const first = await h.connect();
    const localPort = first.localPort;
    // The device reboots: no close_notify, same address and port, a fresh handshake.
    h.clients.splice(0);
    await first.close(true);
    const second = await h.connect('sensor-1', { localPort });
    await eventually(() => h.closed.length > 0, 2000, 'the old session closed');
    expect(h.closed.map((c) => c.reason)).toEqual(['replaced']);
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakes: 2 });

    second.send(Buffer.from('after reboot'));
    const { connection } = await eventually(() => h.received[0], 2000, 'data on the new session');
    expect(connection).not.toBe(h.closed[0]!.connection);
    expect(h.server.connection(`127.0.0.1:${localPort}`)).toBe(connection);
    const answer = second.next();
    connection.send(Buffer.from('welcome back'));
    expect((await answer).toString()).toBe('welcome back');
  });

  it('treats a late copy of the ClientHello that made a session as a duplicate, not a new handshake', async () => {
    const h = await startServer();
    const client = await DtlsClient.connect({ host: '127.0.0.1', port: h.port, pskIdentity: 'sensor-1', pskKey: KEYS.get('sensor-1'), recordSent: true });
    h.clients.push(client);
    // Its second ClientHello, the one with the cookie, is what made the session; it arrives again.
    const helloWithCookie = client.sent.filter(isClientHello).at(-1)!;
    client.sendRaw(helloWithCookie);
    await sleep(200);
    expect(h.closed).toEqual([]);
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakes: 1 });
    client.send(Buffer.from('still here'));
    await eventually(() => h.received[0], 2000, 'data on the same session');
  });

  it('lets a client that restarts in the middle of a handshake start over at once', async () => {
    const h = await startServer({ handshakeTimeoutMs: 5000 });
    const localPort = await freeUdpPort();
    // A wrong key leaves the server's side of the handshake waiting; then the device reboots.
    await expect(h.connect('sensor-1', { pskKey: Buffer.alloc(16, 9), localPort, timeoutMs: 400 })).rejects.toThrow(/timed out/);
    expect(h.server.stats).toMatchObject({ sessions: 0, handshakesInProgress: 1 });
    // Well within handshakeTimeoutMs, the new handshake (a new client random) replaces the stuck one.
    const client = await h.connect('sensor-1', { localPort, timeoutMs: 2000 });
    expect(client.info?.pskIdentity).toBe('sensor-1');
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakesInProgress: 0, handshakes: 1 });
  });

  it('sends close_notify to every established client when it stops', async () => {
    const h = await startServer();
    const clients = [await h.connect('sensor-1'), await h.connect('sensor-2')];
    await h.server.stop();
    await eventually(() => clients.every((c) => c.closedBy === 'peer'), 2000, 'close_notify at both clients');
    expect(h.closed.map((c) => c.reason)).toEqual(['stopped', 'stopped']);
    expect(h.server.stats.sessions).toBe(0);
  });
});

describe('half-open handshakes (cookie echoed, then silent)', () => {
  it('never push out an established session, even one idle long enough to be evicted for a new session', async () => {
    const h = await startServer({ maxSessions: 1, evictableAfterIdleMs: 0, maxHandshakes: 4, maxHandshakesPerAddress: 4 });
    const device = await h.connect('sensor-1');
    await flood(h.port, 12, MANY_ADDRESSES);
    await eventually(() => h.server.stats.handshakesDropped.pool_full === 8, 2000, 'a full pool, given way 8 times');
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakesInProgress: 4, evictions: 0, refusedTableFull: 0 });
    device.send(Buffer.from('still here'));
    await eventually(() => h.received[0], 2000, 'data on the established session');
    expect(h.closed).toEqual([]);
  });

  it('give way, the stalest first, to a device that finishes its handshake when the pool is full', async () => {
    const h = await startServer({ maxHandshakes: 4, maxHandshakesPerAddress: 4 });
    await flood(h.port, 20, MANY_ADDRESSES);
    await eventually(() => h.server.stats.handshakesDropped.pool_full === 16, 2000, 'a full pool, given way 16 times');
    const device = await h.connect('sensor-2');
    expect(device.info?.pskIdentity).toBe('sensor-2');
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakes: 1, handshakesInProgress: 3 });
    expect(h.server.stats.handshakesDropped).toEqual({ pool_full: 17, address_limit: 0, stalled: 0 });
    const warning = h.logs.filter((line) => line.level === 40 && line.msg.startsWith('DTLS handshakes pile up unfinished'));
    expect(warning).toHaveLength(1);
    expect(warning[0]).toMatchObject({ reason: 'pool_full', maxHandshakes: 4, inProgress: 4 });
  });

  it('from one address are held to dtls.maxHandshakesPerAddress; a device at another address is not held up', async () => {
    const h = await startServer({ maxHandshakes: 16, maxHandshakesPerAddress: 3 });
    await flood(h.port, 10, ['127.0.1.1']);
    await eventually(() => h.server.stats.handshakesDropped.address_limit === 7, 2000, '7 handshakes refused');
    expect(h.server.stats.handshakesInProgress).toBe(3);
    await h.connect('sensor-1');
    expect(h.server.stats).toMatchObject({ sessions: 1, handshakesInProgress: 3 });
    const warnings = h.logs.filter((line) => line.level === 40 && line.msg.startsWith('DTLS handshakes from one address'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ address: '127.0.1.1', maxHandshakesPerAddress: 3 });
  });

  it('are dropped once stalled while more than half the pool is taken, and left to dtls.handshakeTimeoutMs otherwise', async () => {
    const h = await startServer({ maxHandshakes: 4, maxHandshakesPerAddress: 4, stalledHandshakeMs: 300, handshakeTimeoutMs: 30_000 });
    await flood(h.port, 2, MANY_ADDRESSES);
    await sleep(700);
    // Half the pool: no pressure, stalled or not.
    expect(h.server.stats).toMatchObject({ handshakesInProgress: 2, handshakeTimeouts: 0 });
    await flood(h.port, 1, MANY_ADDRESSES);
    await eventually(() => h.server.stats.handshakesDropped.stalled === 2, 2000, 'the two stalled handshakes dropped');
    await sleep(700);
    // The newest has stalled meanwhile too, but alone it is no pressure.
    expect(h.server.stats).toMatchObject({ handshakesInProgress: 1, handshakeTimeouts: 0 });
    expect(h.server.stats.handshakesDropped).toEqual({ pool_full: 0, address_limit: 0, stalled: 2 });
  });

  it('hand the memory of a burst of freed sessions back to the system once the burst is over', async () => {
    const h = await startServer({ maxHandshakes: 16, maxHandshakesPerAddress: 1, handshakeTimeoutMs: 1000 });
    const released = () => h.logs.filter((line) => line.msg.startsWith('DTLS: memory of freed sessions handed back'));
    // 300 handshakes from one address: 299 refused and freed at once.
    await flood(h.port, 300, ['127.0.1.1']);
    await eventually(() => h.server.stats.handshakesDropped.address_limit === 299, 2000, '299 handshakes refused');
    const line = await eventually(() => released()[0], 3000, 'the memory handed back');
    expect(line.sessionsFreed).toBeGreaterThanOrEqual(299);
    await sleep(600);
    expect(released()).toHaveLength(1);
  });
});
