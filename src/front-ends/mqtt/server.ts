// The MQTT front end's listeners (mqttDevices.*): plain MQTT and MQTT over TLS, the connection table and
// its bound, one connection per device (a newer one takes over, as in ThingsBoard's transport), and the
// counters /metrics reads. Each accepted socket becomes an MqttConnection.
import net, { type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Subscription } from '../../bridge/index.js';
import type { MqttDialect, PresentedClientCertificate } from '../../device-api/dialects/thingsboard-mqtt.js';
import type { DeviceApi } from '../../device-api/index.js';
import { LogOncePer } from '../../log.js';
import type { Device } from '../../model.js';
import { listenHttp } from '../../net/http-listen.js';
import { listenErrorAdvice, ipv6Unavailable } from '../../net/socket-advice.js';
import type { BoundAddress } from '../../net/udp-socket.js';
import type { MqttSessionJournal, RestoredSessions } from '../../state/session-store.js';
import { MqttConnection, type ConnectionContext, type MqttCounters } from './connection.js';
import { PacketReader } from './packets.js';
import { MqttSessions } from './sessions.js';

export interface MqttDevicesOptions {
  readonly host: string;
  readonly port: number;
  /** PEM texts for the TLS listener; undefined: plain MQTT only. */
  readonly tls: { readonly port: number; readonly cert: string; readonly key: string; readonly ca: string | undefined } | undefined;
  readonly maxConnections: number;
  readonly maxPacketBytes: number;
  readonly connectTimeoutMs: number;
  readonly maxSessions: number;
  readonly sessionExpiryMs: number;
}

export interface MqttDevicesStats {
  readonly connections: number;
  readonly devices: number;
  readonly sessions: number;
  readonly counters: Readonly<MqttCounters>;
}

/** PUBLISHes a connection handles at once before it stops reading. */
const MAX_INFLIGHT = 32;
/** Unread bytes a connection may leave in its socket: a few packets of the largest size. */
const UNSENT_PACKETS = 4;
/** Dead peers of connections without an MQTT keep-alive are found by TCP's. */
const TCP_KEEPALIVE_MS = 60_000;
const WARN_EVERY_MS = 10 * 60_000;
/** How long a stop waits for the publishes in hand to be acknowledged. */
const STOP_SETTLE_MS = 1_000;

export class MqttDeviceServer {
  private readonly servers: net.Server[] = [];
  /** In order of arrival, so the first one not yet connected is the oldest. */
  private readonly connections = new Set<MqttConnection>();
  private readonly byDevice = new Map<string, MqttConnection>();
  private readonly sessions: MqttSessions;
  private readonly warnings = new LogOncePer(WARN_EVERY_MS);
  private readonly counters: MqttCounters = {
    connacks: { accepted: 0, refused: 0 },
    publishes: { accepted: 0, answered: 0, dropped: 0, refused: 0, retried: 0 },
    delivered: { acknowledged: 0, sent: 0, failed: 0 },
    closed: {},
  };
  private readonly context: ConnectionContext;
  private tlsServer: tls.Server | undefined;

  constructor(
    private options: MqttDevicesOptions,
    api: Pick<DeviceApi, 'handle'>,
    dialect: Pick<MqttDialect, 'connect' | 'answerTopic' | 'errorTopic'>,
    bridge: { connected(device: Device, revoked: () => void): Subscription },
    private readonly log: Logger,
    /** Where persistent sessions are written down (the session store); absent: memory only. */
    journal?: MqttSessionJournal,
  ) {
    this.sessions = new MqttSessions(Math.max(1, options.maxSessions), options.sessionExpiryMs, journal);
    this.context = {
      api,
      dialect,
      bridge,
      sessions: this.sessions,
      reader: new PacketReader(),
      options: {
        maxPacketBytes: options.maxPacketBytes,
        connectTimeoutMs: options.connectTimeoutMs,
        maxInflight: MAX_INFLIGHT,
        maxUnsentBytes: UNSENT_PACKETS * options.maxPacketBytes,
      },
      log,
      counters: this.counters,
      claimDevice: (name, connection) => {
        const older = this.byDevice.get(name);
        this.byDevice.set(name, connection);
        if (older && older !== connection) {
          log.info({ device: name }, 'a new MQTT connection of this device takes over from its older one, which is closed');
          older.close('taken-over');
        }
      },
      releaseDevice: (name, connection) => {
        if (this.byDevice.get(name) === connection) this.byDevice.delete(name);
      },
      warn: (key, fields, message) => {
        if (this.warnings.first(key)) log.warn(fields, message);
      },
    };
  }

  /** Resolves with the addresses listened on (plain, then TLS); rejects with the first listen error. */
  async start(): Promise<{ plain: BoundAddress; tls: BoundAddress | undefined }> {
    const plain = await this.listen(net.createServer({ noDelay: true }, (socket) => this.accept(socket, undefined)), this.options.port);
    const secure = this.options.tls;
    if (!secure) return { plain, tls: undefined };
    const server = tls.createServer({
      cert: secure.cert,
      key: secure.key,
      ...(secure.ca ? { ca: secure.ca } : {}),
      // The certificate is checked against the registry (a pinned fingerprint needs no CA), not refused here.
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: this.options.connectTimeoutMs,
      noDelay: true,
    });
    // Handshakes under way are not in the connection table yet: Node's own bound keeps a flood of them finite.
    server.maxConnections = this.options.maxConnections;
    server.on('secureConnection', (socket: TLSSocket) => this.accept(socket, presentedCertificate(socket)));
    this.tlsServer = server;
    server.on('tlsClientError', (error: Error, socket: TLSSocket) => {
      this.counters.closed['tls-handshake'] = (this.counters.closed['tls-handshake'] ?? 0) + 1;
      if (this.warnings.first(`tls ${socket.remoteAddress ?? ''}`)) {
        warnHandshakeFailed(this.log, socket.remoteAddress, error.message);
      }
    });
    return { plain, tls: await this.listen(server, secure.port) };
  }

  /**
   * New certificate, key and CA for TLS handshakes from now on (a reload); connections keep theirs.
   * Throws when OpenSSL refuses them (a key that does not match), and the previous ones stay.
   */
  replaceTls(material: NonNullable<MqttDevicesOptions['tls']>): 'reloaded' | 'unchanged' {
    const current = this.options.tls;
    if (!this.tlsServer || !current) return 'unchanged';
    if (current.cert === material.cert && current.key === material.key && current.ca === material.ca) return 'unchanged';
    this.tlsServer.setSecureContext({ cert: material.cert, key: material.key, ...(material.ca ? { ca: material.ca } : {}) });
    this.options = { ...this.options, tls: { ...current, cert: material.cert, key: material.key, ca: material.ca } };
    return 'reloaded';
  }

  /** The persistent sessions an earlier run wrote down: a device coming back finds its subscriptions. */
  restoreSessions(saved: RestoredSessions['mqttSessions']): void {
    this.sessions.restore(saved);
  }

  stats(): MqttDevicesStats {
    return { connections: this.connections.size, devices: this.byDevice.size, sessions: this.sessions.size, counters: this.counters };
  }

  /**
   * Stops listening; the publishes in hand get up to a second to become safe and be acknowledged (a
   * PUBACK sent is a message the device will not send again), then every connection closes.
   */
  async stop(): Promise<void> {
    const closed = this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    let timer: NodeJS.Timeout | undefined;
    const settled = Promise.all([...this.connections].map((connection) => connection.quiesce()));
    await Promise.race([settled, new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_SETTLE_MS)))]);
    clearTimeout(timer);
    for (const connection of [...this.connections]) connection.close('stopping', undefined, true);
    await Promise.all(closed);
  }

  private accept(socket: Socket, certificate: PresentedClientCertificate | undefined): void {
    if (this.connections.size >= this.options.maxConnections && !this.makeRoom()) {
      this.counters.closed['refused'] = (this.counters.closed['refused'] ?? 0) + 1;
      if (this.warnings.first('full')) {
        this.log.warn(
          { maxConnections: this.options.maxConnections },
          'MQTT device connections reached mqttDevices.maxConnections and every one is connected: new ones are refused (raise the bound?); logged again in 10 minutes at most',
        );
      }
      socket.destroy();
      return;
    }
    socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
    const address = socket.remoteAddress ?? 'unknown';
    const connection = new MqttConnection(socket, address, certificate, this.context, (ended) => this.connections.delete(ended));
    this.connections.add(connection);
  }

  /** Closes the oldest connection that has not sent CONNECT; false when every one is connected. */
  private makeRoom(): boolean {
    for (const connection of this.connections) {
      if (!connection.connected) {
        connection.close('evicted', 'closed to make room: mqttDevices.maxConnections reached');
        return true;
      }
    }
    return false;
  }

  private listen(server: net.Server, port: number): Promise<BoundAddress> {
    const { host } = this.options;
    const attempt = (on: string): Promise<BoundAddress> => listenHttp(server, on, port, this.log, 'MQTT device listener');
    return attempt(host)
      .catch((error: NodeJS.ErrnoException) => {
        // As the other listeners do: "::" on a kernel without IPv6 means IPv4 only.
        if (ipv6Unavailable(host, error)) return attempt('0.0.0.0');
        throw error;
      })
      .then((bound) => {
        this.servers.push(server);
        return bound;
      });
  }
}

function warnHandshakeFailed(logger: Logger, peer: string | undefined, reason: string): void {
  logger.warn({ peer, reason }, 'MQTT over TLS: handshake failed; repeats from this address are not logged for 10 minutes');
}

/** The client certificate a TLS connection presented, as the registry reads it; undefined without one. */
function presentedCertificate(socket: TLSSocket): PresentedClientCertificate | undefined {
  const certificate = socket.getPeerCertificate();
  if (!certificate || Object.keys(certificate).length === 0 || !certificate.fingerprint256) return undefined;
  const commonName = certificate.subject?.CN;
  return {
    fingerprint256: certificate.fingerprint256.replace(/:/g, '').toLowerCase(),
    commonName: typeof commonName === 'string' ? commonName : null,
    subject: Object.entries(certificate.subject ?? {})
      .map(([name, value]) => `${name}=${String(value)}`)
      .join(', '),
    chainError: socket.authorized ? null : String(socket.authorizationError ?? 'not verified'),
  };
}

/** A listen error as a technician reads it: what holds the port, and what to change. */
export function describeMqttBindError(error: NodeJS.ErrnoException, host: string, port: number, portKey: string): string {
  return listenErrorAdvice(error, {
    transport: 'TCP',
    host,
    port,
    hostKey: 'mqttDevices.host',
    portKey,
    portName: 'the MQTT device port',
    purpose: 'MQTT devices',
    usualHolders: 'mosquitto or another MQTT broker? the embedded broker of an upstream-less gateway uses embeddedBroker.port',
  });
}
