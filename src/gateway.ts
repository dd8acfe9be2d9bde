// Composition root: builds every part from its slice of the configuration and gives the whole a
// start/stop lifecycle. Data flows datagram → message layer → route → bridge → upstream.
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { createBridge } from './bridge/index.js';
import { createDirectUplink } from './bridge/deliver.js';
import { DevicePresence } from './bridge/presence.js';
import { RequestLimits } from './coap/limits.js';
import { CoapMessageLayer } from './coap/message-layer.js';
import { createRouter } from './coap/routes/index.js';
import { createThingsBoardRoute } from './coap/routes/thingsboard.js';
import { formatPeer, type DatagramSink } from './coap/transport.js';
import { DtlsTransport } from './coap/dtls-transport.js';
import { UdpTransport } from './coap/udp-transport.js';
import type { DtlsConfig, GatewayConfig } from './config/load.js';
import { DtlsBindingError } from './dtls/native.js';
import type { DtlsPolicy } from './dtls/server.js';
import { AttributeStore } from './devices/attribute-store.js';
import { DeviceRegistry } from './devices/registry.js';
import { redactUrl } from './log.js';
import { describeBindError, type BoundAddress } from './net/udp-socket.js';
import { Outbox } from './outbox/outbox.js';
import { OutboxStore, StoreOpenError } from './outbox/store.js';
import { UpstreamConnection } from './upstream/connection.js';
import { DOWNLINK_TOPICS } from './upstream/gateway-api.js';
import type { EmbeddedBroker } from './upstream/embedded-broker.js';

/** A start-up failure the technician can act on; the CLI prints its message and exits 1. */
export class StartupError extends Error {}

export interface Gateway {
  readonly coapAddress: BoundAddress;
  /** Set when dtls.enabled. */
  readonly dtlsAddress: BoundAddress | undefined;
  readonly dtls: DtlsTransport | undefined;
  /** The broker actually used (the embedded one's address when upstream.url is empty). */
  readonly upstreamUrl: string;
  readonly messageLayer: CoapMessageLayer;
  /** Device-facing 4.29 limits and unknown-token blocks; stats() for a metrics endpoint. */
  readonly limits: RequestLimits;
  readonly upstream: UpstreamConnection;
  /** Set when outbox.enabled. */
  readonly outbox: Outbox | undefined;
  /** Answers what is in progress (up to drainTimeoutMs), then closes everything. Idempotent. */
  stop(drainTimeoutMs?: number): Promise<void>;
}

export async function startGateway(config: GatewayConfig, log: Logger): Promise<Gateway> {
  const stateDir = prepareStateDir(config.state.dir);
  const clientId = config.upstream.clientId || persistentClientId(stateDir);

  let broker: EmbeddedBroker | undefined;
  let upstreamUrl = config.upstream.url;
  if (upstreamUrl === '') {
    try {
      // Loaded only in embedded mode: aedes costs ~14 MB of memory a ThingsBoard-connected box never needs.
      const { startEmbeddedBroker } = await import('./upstream/embedded-broker.js');
      broker = await startEmbeddedBroker(config.embeddedBroker.host, config.embeddedBroker.port, log.child({ component: 'embedded-broker' }));
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
    upstreamUrl = broker.url;
  }

  const upstream = new UpstreamConnection({ ...config.upstream, url: upstreamUrl, clientId }, log.child({ component: 'upstream' }));
  let attributes: AttributeStore;
  try {
    attributes = AttributeStore.open(join(stateDir, 'attributes.json'), log.child({ component: 'attribute-cache' }));
  } catch (error) {
    await broker?.close();
    throw new StartupError(`cannot read the attribute cache in ${stateDir}: ${(error as Error).message}`);
  }
  let store: OutboxStore | undefined;
  try {
    store = config.outbox.enabled ? openOutboxStore(stateDir, config.outbox.synchronous, log) : undefined;
  } catch (error) {
    attributes.close();
    await broker?.close();
    throw error;
  }
  const presence = new DevicePresence(upstream, config.sessions, log.child({ component: 'presence' }));
  const outbox =
    store && new Outbox(store, upstream, (device) => presence.ensureAnnounced(device), { ...config.outbox, dir: stateDir }, log.child({ component: 'outbox' }));
  const bridge = createBridge({
    upstream,
    uplink: outbox ?? createDirectUplink(upstream, presence),
    presence,
    attributes,
    sessions: config.sessions,
    sessionLimitsTimeoutMs: config.upstream.sessionLimitsTimeoutMs,
    log: log.child({ component: 'bridge' }),
  });
  upstream.subscribe(DOWNLINK_TOPICS);
  upstream.onMessage(bridge.handleDownlink);
  const registry = new DeviceRegistry(config.devices);
  const limits = new RequestLimits(config.limits, log.child({ component: 'limits' }));
  const handler = createRouter({
    api: createThingsBoardRoute({ registry, bridge, limits, log: log.child({ component: 'thingsboard-api' }) }),
  });
  const coap = config.coap;
  const messageLayer = new CoapMessageLayer(
    {
      piggybackWindowMs: coap.piggybackWindowMs,
      maxBodyBytes: coap.maxPayloadBytes,
      maxBlockTransfers: coap.maxBlockTransfers,
      blockTransferIdleMs: coap.blockTransferIdleMs,
      dedupMaxEntries: coap.dedupMaxEntries,
      maxBlockSize: coap.maxBlockSize,
      observeCheckIntervalMs: coap.observeCheckIntervalMs,
      maxObservations: coap.maxObservations,
      limits,
    },
    handler,
    log.child({ component: 'coap' }),
  );
  const transport = new UdpTransport(
    { host: coap.host, port: coap.port, socketBufferBytes: coap.socketBufferBytes },
    messageLayer.receive,
    log.child({ component: 'udp' }),
  );
  let dtls: DtlsTransport | undefined;
  /** Closes whatever exists, in data-flow order; every part tolerates being closed before it started. */
  const closeAll = async (): Promise<void> => {
    await dtls?.stop();
    await transport.stop();
    messageLayer.stop();
    bridge.stop();
    presence.stop();
    // Before the connection closes: publishes on their way may still be acknowledged.
    await outbox?.stop();
    attributes.close();
    await upstream.stop();
    await broker?.close();
  };

  let coapAddress: BoundAddress;
  let dtlsAddress: BoundAddress | undefined;
  try {
    if (config.dtls.enabled) {
      dtls = createDtlsTransport(config.dtls, coap.host, coap.socketBufferBytes, registry, messageLayer.receive, log.child({ component: 'dtls' }));
    }
    try {
      upstream.start();
    } catch (error) {
      // Reading upstream.ca/cert/key can still fail here if the files changed since the config was checked.
      throw new StartupError(`cannot start the upstream connection: ${(error as Error).message}`);
    }
    outbox?.start();
    coapAddress = await transport.start().catch((error: NodeJS.ErrnoException) => {
      throw new StartupError(describeBindError(error, 'CoAP', coap.host, coap.port, 'coap.port'));
    });
    dtlsAddress = await dtls?.start().catch((error: NodeJS.ErrnoException) => {
      throw new StartupError(describeBindError(error, 'DTLS', coap.host, config.dtls.port, 'dtls.port'));
    });
  } catch (error) {
    await closeAll();
    throw error instanceof StartupError ? error : new StartupError((error as Error).message);
  }
  log.info(
    {
      coap: `udp ${formatPeer(coapAddress)}`,
      dtls: dtlsAddress ? `udp ${formatPeer(dtlsAddress)}` : 'off',
      devices: registry.size,
      upstream: redactUrl(upstreamUrl),
      outbox: outbox ? `${config.outbox.synchronous} sync, ${outbox.stats().records} records waiting` : 'off (acknowledge after PUBACK)',
    },
    'coap2mqtt started',
  );

  let stopping: Promise<void> | undefined;
  return {
    coapAddress,
    dtlsAddress,
    dtls,
    upstreamUrl,
    messageLayer,
    limits,
    upstream,
    outbox,
    stop(drainTimeoutMs = 5000) {
      stopping ??= (async () => {
        await messageLayer.drain(drainTimeoutMs);
        await closeAll();
        log.info('coap2mqtt stopped');
      })();
      return stopping;
    },
  };
}

/** The outbox file in the state directory; an unreadable one is moved aside (and said so), never deleted. */
function openOutboxStore(stateDir: string, synchronous: 'full' | 'normal', log: Logger): OutboxStore {
  const path = join(stateDir, 'outbox.sqlite');
  try {
    const { store, movedAside } = OutboxStore.open(path, synchronous);
    if (movedAside) log.error({ file: movedAside }, 'the outbox file could not be read; it was moved aside (kept for recovery) and a new one started');
    return store;
  } catch (error) {
    throw new StartupError(error instanceof StoreOpenError ? error.message : `cannot open the outbox ${path}: ${(error as Error).message}`);
  }
}

function prepareStateDir(dir: string): string {
  const absolute = resolve(dir);
  try {
    mkdirSync(absolute, { recursive: true });
    accessSync(absolute, constants.W_OK);
  } catch (error) {
    throw new StartupError(`state.dir "${absolute}" cannot be created or is not writable: ${(error as Error).message}`);
  }
  return absolute;
}

/**
 * The MQTT client id when none is configured: host name plus a random suffix, created on first start and
 * kept in the state directory. Brokers evict an older session with the same id, and many boxes share
 * a host name like "raspberrypi".
 */
function persistentClientId(stateDir: string): string {
  const file = join(stateDir, 'mqtt-client-id');
  try {
    const stored = readFileSync(file, 'utf8').trim();
    if (stored !== '') return stored;
  } catch {
    // First start: create it below.
  }
  const id = `coap2mqtt-${hostname().replace(/[^\w.-]/g, '').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(file, `${id}\n`);
  } catch (error) {
    throw new StartupError(`cannot write ${file}: ${(error as Error).message}`);
  }
  return id;
}

/**
 * The DTLS listener, with the registry deciding who may connect. Key material is read here so a missing or
 * unreadable file is named by its config key; OpenSSL's own complaints ("key values mismatch") likewise.
 */
function createDtlsTransport(
  config: DtlsConfig,
  host: string,
  socketBufferBytes: number,
  registry: DeviceRegistry,
  sink: DatagramSink,
  log: Logger,
): DtlsTransport {
  const read = (key: 'cert' | 'key' | 'ca'): string | undefined => {
    const path = config[key];
    if (path === '') return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      throw new StartupError(`dtls.${key}: cannot read "${path}": ${(error as Error).message}`);
    }
  };
  const material = { cert: read('cert'), key: read('key'), ca: read('ca') };
  const policy: DtlsPolicy = {
    pskKey: (identity) => registry.pskKey(identity),
    checkCertificate: (certificate) => {
      const reason = registry.refuseCertificate(certificate);
      return reason === undefined ? { accepted: true } : { accepted: false, reason };
    },
  };
  try {
    return new DtlsTransport(
      {
        ...config,
        host,
        socketBufferBytes,
        ...material,
        // Asked for whenever a device could present one; PSK handshakes never include the request.
        requestClientCert: material.ca !== undefined || registry.hasCertificateDevices || config.requireClientCert,
      },
      policy,
      sink,
      log,
    );
  } catch (error) {
    if (error instanceof DtlsBindingError) throw new StartupError(error.message);
    // The binding names the material that failed: "cert: ...", "key: key values mismatch", "ciphers: ...".
    const message = (error as Error).message;
    const [what, ...reason] = message.split(': ');
    const key = what as keyof DtlsConfig;
    if (reason.length > 0 && key in config) {
      const value = key === 'ciphers' ? config.ciphers : `"${String(config[key])}"`;
      throw new StartupError(`dtls.${key} ${value}: ${reason.join(': ')}`);
    }
    throw new StartupError(`cannot start DTLS: ${message}`);
  }
}
