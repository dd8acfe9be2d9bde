// Composition root: builds every part from its slice of the configuration and gives the whole a
// start/stop lifecycle. Data flows datagram → message layer → route → bridge → upstream.
import { randomBytes } from 'node:crypto';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { createBridge } from './bridge/index.js';
import { createDirectUplink } from './bridge/deliver.js';
import { createProvisioner } from './bridge/provision.js';
import { DevicePresence } from './bridge/presence.js';
import { CoapMessageLayer } from './coap/message-layer.js';
import { formatPeer, type DatagramSink } from './coap/transport.js';
import { DtlsTransport } from './coap/dtls-transport.js';
import { UdpTransport } from './coap/udp-transport.js';
import type { DtlsConfig, GatewayConfig } from './config/load.js';
import { createDirectories } from './config/paths.js';
import { DtlsBindingError } from './dtls/native.js';
import type { DtlsPolicy } from './dtls/server.js';
import { AttributeStore } from './devices/attribute-store.js';
import { DeviceEnrolment } from './devices/enrolment.js';
import { DeviceRegistry, type RegistryChange } from './devices/registry.js';
import { RecentValues } from './devices/recent-values.js';
import { TokenCheck } from './devices/token-check.js';
import { FirmwareImageStore } from './firmware/image-store.js';
import { createDeviceApis } from './device-api/index.js';
import { RequestLimits } from './device-api/limits.js';
import { coapAdmission, createCoapFrontEnd } from './front-ends/coap/router.js';
import { createDeviceHttpApi } from './front-ends/http/device-http.js';
import { DeviceHttpServer, describeDeviceHttpBindError } from './front-ends/http/server.js';
import { ComponentLoggers, redactUrl } from './log.js';
import { describeBindError, type BoundAddress } from './net/udp-socket.js';
import { Outbox } from './outbox/outbox.js';
import { SpillingUplink } from './outbox/spilling-uplink.js';
import { OutboxStore, StoreOpenError } from './outbox/store.js';
import { OpsHttpServer, describeHttpBindError } from './ops/http-server.js';
import { restoreSessions, type RestoreSummary } from './state/restore.js';
import { SessionStore, type RestoredSessions } from './state/session-store.js';
import { ResponseCode } from './coap/codes.js';
import type { CoapResponse } from './coap/request.js';
import { UpstreamConnection } from './upstream/connection.js';
import { DOWNLINK_TOPICS } from './upstream/gateway-api.js';
import { requestProvisioning } from './upstream/provision-client.js';
import type { EmbeddedBroker } from './upstream/embedded-broker.js';

/** A start-up failure the technician can act on; the CLI prints its message and exits 1. */
export class StartupError extends Error {}

/**
 * A start refused for what the configuration says, found only at start (OpenSSL refusing dtls.ciphers or
 * a PEM file): like check-config's refusals it exits 2, which the systemd unit does not restart.
 */
export class ConfigurationError extends StartupError {}

export interface Gateway {
  /** state.dir, absolute. */
  readonly stateDir: string;
  /** Loggers by component, with the levels of log.level and log.components (reload changes them). */
  readonly logs: ComponentLoggers;
  readonly coapAddress: BoundAddress;
  /** Set when dtls.enabled. */
  readonly dtlsAddress: BoundAddress | undefined;
  readonly dtls: DtlsTransport | undefined;
  /** The health and metrics endpoint (/healthz, /metrics); set when http.enabled. */
  readonly httpAddress: BoundAddress | undefined;
  /** The HTTP device API; set when deviceHttp.enabled. */
  readonly deviceHttpAddress: BoundAddress | undefined;
  /** The broker actually used (the embedded one's address when upstream.url is empty). */
  readonly upstreamUrl: string;
  readonly messageLayer: CoapMessageLayer;
  /** Device-facing 4.29 limits and unknown-token blocks; stats() for a metrics endpoint. */
  readonly limits: RequestLimits;
  readonly upstream: UpstreamConnection;
  /** Set when outbox.enabled. */
  readonly outbox: Outbox | undefined;
  /**
   * Applies a new configuration without a restart (SIGHUP): the device list and the DTLS certificate, key
   * and CA. Devices that did not change keep their observations and DTLS sessions. Other changed keys are
   * listed in the report as needing a restart, and not applied.
   */
  reload(next: GatewayConfig): ReloadReport;
  /** Answers what is in progress (up to drainTimeoutMs), then closes everything. Idempotent. */
  stop(drainTimeoutMs?: number): Promise<void>;
}

export interface ReloadReport {
  readonly devices: RegistryChange;
  /** DTLS sessions closed because their device was removed or changed. */
  readonly dtlsSessionsClosed: number;
  /** 'reloaded' when the files changed and OpenSSL took them; otherwise why not. */
  readonly dtlsCredentials: 'reloaded' | 'unchanged' | 'off' | { readonly error: string };
  /** Keys whose new value needs a restart to take effect. */
  readonly restartNeeded: readonly string[];
}

export async function startGateway(config: GatewayConfig, log: Logger): Promise<Gateway> {
  const logs = new ComponentLoggers(log, config.log.components);
  const stateDir = prepareStateDir(config.state.dir);
  const clientId = config.upstream.clientId || persistentClientId(stateDir);

  let broker: EmbeddedBroker | undefined;
  let upstreamUrl = config.upstream.url;
  if (upstreamUrl === '') {
    try {
      // Loaded only in embedded mode: aedes costs ~14 MB of memory a ThingsBoard-connected box never needs.
      const { startEmbeddedBroker } = await import('./upstream/embedded-broker.js');
      broker = await startEmbeddedBroker(config.embeddedBroker.host, config.embeddedBroker.port, logs.for('embedded-broker'));
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
    upstreamUrl = broker.url;
  }

  // The embedded broker is no ThingsBoard: nobody would answer getSessionLimits, and the first readings
  // would wait sessionLimitsTimeoutMs for that silence.
  const sessionLimitsTimeoutMs = broker ? 0 : config.upstream.sessionLimitsTimeoutMs;
  const upstream = new UpstreamConnection({ ...config.upstream, url: upstreamUrl, clientId, sessionLimitsTimeoutMs }, logs.for('upstream'));
  let attributes: AttributeStore;
  try {
    attributes = AttributeStore.open(join(stateDir, 'attributes.json'), logs.for('attribute-cache'));
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
  const sessionStore = config.sessions.persist ? openSessionStore(stateDir, logs.for('sessions')) : undefined;
  const presence = new DevicePresence(upstream, config.sessions, logs.for('presence'));
  const registry = new DeviceRegistry(config.devices);
  const images = new FirmwareImageStore(
    { ...config.firmware, cacheDir: resolve(config.firmware.cacheDir || join(stateDir, 'firmware')) },
    logs.for('firmware'),
  );
  const outbox =
    store && new Outbox(store, upstream, (device) => presence.ensureAnnounced(device), { ...config.outbox, dir: stateDir }, logs.for('outbox'));
  // mode "spill": straight upstream while ThingsBoard keeps up, the outbox only when it does not.
  const spilling =
    outbox && config.outbox.mode === 'spill'
      ? new SpillingUplink(outbox, upstream, presence, config.outbox.spillAfterMs, logs.for('outbox'))
      : undefined;
  const bridge = createBridge({
    upstream,
    devices: registry,
    downlinkBounds: { maxBytes: config.upstream.maxDownlinkBytes, maxDepth: config.upstream.maxDownlinkDepth },
    uplink: spilling ?? outbox ?? createDirectUplink(upstream, presence),
    presence,
    attributes,
    sessions: config.sessions,
    ...(sessionStore ? { rpcJournal: sessionStore } : {}),
    sessionLimitsTimeoutMs,
    packages: { store: images, tokenOf: (name) => registry.tokenOf(name) },
    // Only thethings.io's read asks for values back; without it nothing is kept.
    ...(config.thethings.enabled ? { recentValues: new RecentValues(config.thethings.valuesPerKey, config.thethings.maxSeries) } : {}),
    log: logs.for('bridge'),
  });
  upstream.subscribe(DOWNLINK_TOPICS);
  upstream.onMessage(bridge.handleDownlink);
  const enrolment = new DeviceEnrolment(
    config.devicesFile,
    registry,
    (change) => bridge.revokeDevices(change.changed),
    logs.for('provision'),
  );
  const provisioner = createProvisioner({
    config: config.provision,
    enrolment,
    askUpstream: (request) =>
      requestProvisioning({ url: upstreamUrl, upstream: config.upstream, timeoutMs: config.provision.timeoutMs }, request),
    announce: (device) => presence.ensureAnnounced(device),
    log: logs.for('provision'),
  });
  const limits = new RequestLimits(config.limits, logs.for('limits'));
  const tokens = new TokenCheck(registry, limits, logs.for('thingsboard-api'));
  const deviceApis = createDeviceApis({
    registry,
    bridge,
    provisioner,
    limits,
    tokens,
    thethings: config.thethings.enabled ? config.thethings : undefined,
    // A margin inside the piggyback window: the answer must beat the empty ACK.
    coapPackageWaitMs: Math.max(0, config.coap.piggybackWindowMs - PIGGYBACK_MARGIN_MS),
    log: (component) => logs.for(component),
  });
  const handler = createCoapFrontEnd(deviceApis.coap);
  const coap = config.coap;
  const messageLayer = new CoapMessageLayer(
    {
      piggybackWindowMs: coap.piggybackWindowMs,
      maxBodyBytes: coap.maxRequestBodyBytes,
      maxBlockTransfers: coap.maxBlockTransfers,
      blockTransferIdleMs: coap.blockTransferIdleMs,
      dedupMaxEntries: coap.dedupMaxEntries,
      dedupMaxBytes: coap.dedupMaxBytes,
      maxBlockSize: coap.maxBlockSize,
      observeCheckIntervalMs: coap.observeCheckIntervalMs,
      maxObservations: coap.maxObservations,
      limits: coapAdmission(limits),
    },
    handler,
    logs.for('coap'),
  );
  if (sessionStore) messageLayer.useJournal(sessionStore);
  const transport = new UdpTransport(
    { host: coap.host, port: coap.port, socketBufferBytes: coap.socketBufferBytes },
    messageLayer.receive,
    logs.for('udp'),
  );
  let dtls: DtlsTransport | undefined;
  let dtlsMaterial: DtlsMaterial | undefined;
  let http: OpsHttpServer | undefined;
  let deviceHttp: DeviceHttpServer | undefined;
  /** Closes whatever exists, in data-flow order; every part tolerates being closed before it started. */
  const closeAll = async (): Promise<void> => {
    await deviceHttp?.stop();
    await dtls?.stop();
    await transport.stop();
    messageLayer.stop();
    bridge.stop();
    images.stop();
    enrolment.stop();
    presence.stop();
    // Before the connection closes: publishes on their way may still be acknowledged.
    spilling?.stop();
    await outbox?.stop();
    attributes.close();
    await upstream.stop();
    // After the message layer (relations it ended on the way out stay written, to come back at the next
    // start) and after upstream (an RPC arriving until then is kept too).
    sessionStore?.close();
    await broker?.close();
    // Last: /healthz says "stopping" while the rest drains.
    await http?.stop();
  };

  let coapAddress: BoundAddress;
  let dtlsAddress: BoundAddress | undefined;
  let httpAddress: BoundAddress | undefined;
  let deviceHttpAddress: BoundAddress | undefined;
  let restored: RestoreSummary | undefined;
  const restoreStarted = performance.now();
  try {
    if (config.dtls.enabled) {
      dtlsMaterial = readDtlsMaterial(config.dtls, registry);
      dtls = createDtlsTransport(config.dtls, dtlsMaterial, coap.host, coap.socketBufferBytes, registry, messageLayer.receive, logs.for('dtls'));
    }
    // Before ThingsBoard or any device can speak: a new RPC must line up after the kept ones, and a device
    // registering now must not be replaced by its own stale relation.
    const kept = sessionStore && readSessions(sessionStore, coap.maxObservations, logs.for('sessions'));
    if (sessionStore && kept) {
      const transports = dtls ? [transport, dtls] : [transport];
      restored = await restoreSessions(sessionStore, kept, bridge, messageLayer, transports);
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
    if (config.deviceHttp.enabled) {
      const { host, port } = config.deviceHttp;
      const api = createDeviceHttpApi(deviceApis.http);
      deviceHttp = new DeviceHttpServer(config.deviceHttp, api, logs.for('device-http'));
      deviceHttpAddress = await deviceHttp.start().catch((error: NodeJS.ErrnoException) => {
        throw new StartupError(describeDeviceHttpBindError(error, host, port));
      });
    }
    if (config.http.enabled) {
      const { host, port } = config.http;
      const server = dtls?.server;
      http = new OpsHttpServer(
        { host, port },
        {
          messageLayer,
          limits,
          upstream,
          outbox,
          dtls: server,
          bridge,
          provisioner,
          images,
          deviceHttp,
          sessions: sessionStore,
          devices: () => registry.size,
          observations: () => messageLayer.stats.observations,
          dtlsSessions: () => server?.stats.sessions,
          upstreamUrl,
        },
        logs.for('http'),
      );
      httpAddress = await http.start().catch((error: NodeJS.ErrnoException) => {
        throw new StartupError(describeHttpBindError(error, host, port));
      });
    }
    if (restored) {
      const confirming = await messageLayer.wakeRestored();
      if (restored.restored + restored.refused + restored.dropped + restored.rpcs > 0) {
        logs.for('sessions').info(
          { ...restored, confirming, ms: Math.round(performance.now() - restoreStarted) },
          'device sessions restored from before the restart: each Observe relation is confirmed with a notification of the current state (DTLS ones once their device handshakes again); refused ones belong to devices removed or given new credentials meanwhile',
        );
      }
    }
  } catch (error) {
    await closeAll();
    throw error instanceof StartupError ? error : new StartupError((error as Error).message);
  }
  log.info(
    {
      coap: `udp ${formatPeer(coapAddress)}`,
      dtls: dtlsAddress ? `udp ${formatPeer(dtlsAddress)}` : 'off',
      http: httpAddress ? `http://${formatPeer(httpAddress)}/healthz, /metrics` : 'off',
      deviceHttp: deviceHttpAddress ? `http://${formatPeer(deviceHttpAddress)}/api/v1/` : 'off',
      devices: registry.size,
      upstream: redactUrl(upstreamUrl),
      outbox: outbox
        ? `${config.outbox.mode === 'spill' ? 'spill when ThingsBoard is down or slow' : 'every reading'}, ${config.outbox.synchronous} sync, ${outbox.stats().records} records waiting`
        : 'off (acknowledge after PUBACK)',
    },
    'coap2mqtt started',
  );

  let stopping: Promise<void> | undefined;
  let current = config;
  const reload = (next: GatewayConfig): ReloadReport => {
    const devices = registry.replace(next.devices);
    // Provisioned devices whose write to the devices file is still pending are not dropped by a reload.
    enrolment.reapplyUnsaved();
    const revoked = new Set([...devices.removed, ...devices.changed]);
    bridge.revokeDevices([...revoked]);
    // A session authenticated as a device that is gone or changed ends; token-only sessions are checked per request.
    const dtlsSessionsClosed =
      dtls?.server.closeWhere((connection) => {
        if (connection.credential === undefined) return false;
        const device = registry.findByCredential(connection.credential);
        return device === undefined || revoked.has(device.name);
      }) ?? 0;
    let dtlsCredentials: ReloadReport['dtlsCredentials'] = 'off';
    if (dtls && dtlsMaterial) {
      try {
        // After registry.replace: certificate devices added by this reload count.
        const material = readDtlsMaterial(next.dtls, registry);
        const same =
          material.cert === dtlsMaterial.cert &&
          material.key === dtlsMaterial.key &&
          material.ca === dtlsMaterial.ca &&
          material.requestClientCert === dtlsMaterial.requestClientCert;
        if (same) dtlsCredentials = 'unchanged';
        else {
          dtls.server.replaceCredentials(material);
          dtlsMaterial = material;
          dtlsCredentials = 'reloaded';
        }
      } catch (error) {
        dtlsCredentials = { error: error instanceof StartupError ? error.message : describeDtlsError(error as Error, next.dtls) };
      }
    }
    logs.setLevels(next.log.level, next.log.components);
    const restartNeeded = changedKeys(current, next).filter((key) => !RELOADABLE_KEYS.has(key) && !key.startsWith('log.components.'));
    current = { ...current, devices: next.devices, dtls: { ...current.dtls, cert: next.dtls.cert, key: next.dtls.key, ca: next.dtls.ca }, log: next.log };
    return { devices, dtlsSessionsClosed, dtlsCredentials, restartNeeded };
  };
  return {
    stateDir,
    logs,
    coapAddress,
    dtlsAddress,
    dtls,
    httpAddress,
    deviceHttpAddress,
    upstreamUrl,
    messageLayer,
    limits,
    upstream,
    outbox,
    reload,
    stop(drainTimeoutMs = 5000) {
      stopping ??= (async () => {
        http?.beginStopping();
        await messageLayer.drain(drainTimeoutMs);
        // What is written now comes back at the next start; only the other observers are told to register again.
        sessionStore?.flush();
        await messageLayer.endObservations(RESTARTING, FAREWELL_WAIT_MS);
        await closeAll();
        log.info('coap2mqtt stopped');
      })();
      return stopping;
    },
  };
}

/** What an observer hears at a clean stop when its relation cannot come back (sessions.persist off, a store that failed). */
const RESTARTING: CoapResponse = {
  code: ResponseCode.ServiceUnavailable,
  payload: 'the gateway is stopping and cannot keep this observation; register again',
  maxAge: 10,
};
/** How long a stop waits for those observers to acknowledge that. */
const FAREWELL_WAIT_MS = 1000;

/**
 * The session store in the state directory. Without one the gateway still runs: relations then live in
 * memory only, and a clean stop tells their observers to register again.
 */
function openSessionStore(stateDir: string, log: Logger): SessionStore | undefined {
  const opened = SessionStore.open(join(stateDir, 'sessions.sqlite'), log);
  if (opened.status === 'unusable') {
    log.error({ reason: opened.reason }, 'device sessions cannot be kept across restarts this run (Observe relations and queued RPCs live in memory only)');
    return undefined;
  }
  if (opened.movedAside) {
    log.error(
      { file: opened.movedAside },
      'the device sessions file could not be read; it was moved aside and a new one started. Devices that observed before must register again (they will once their relation times out)',
    );
  }
  return opened.store;
}

/** What the session store kept; a read failing past the check at open costs the kept sessions, never the start. */
function readSessions(store: SessionStore, maxObservations: number, log: Logger): RestoredSessions | undefined {
  try {
    return store.restore(maxObservations);
  } catch (error) {
    log.error({ reason: (error as Error).message }, 'the device sessions kept from before the restart could not be read back; starting without them (devices register again once their relations time out)');
    return undefined;
  }
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
    createDirectories(absolute);
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
  material: DtlsMaterial,
  host: string,
  socketBufferBytes: number,
  registry: DeviceRegistry,
  sink: DatagramSink,
  log: Logger,
): DtlsTransport {
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
        cert: material.cert,
        key: material.key,
        ca: material.ca,
        requestClientCert: material.requestClientCert,
      },
      policy,
      sink,
      log,
    );
  } catch (error) {
    if (error instanceof DtlsBindingError) throw new StartupError(error.message);
    const message = describeDtlsError(error as Error, config);
    // "dtls.<key> ...": OpenSSL named the setting it refused.
    throw message.startsWith('dtls.') ? new ConfigurationError(message) : new StartupError(message);
  }
}

/** The PEM texts of dtls.cert, key and ca, and whether handshakes ask for a client certificate. */
interface DtlsMaterial {
  readonly cert: string | undefined;
  readonly key: string | undefined;
  readonly ca: string | undefined;
  readonly requestClientCert: boolean;
}

/** Read here, so a missing or unreadable file is named by its config key. */
function readDtlsMaterial(config: DtlsConfig, registry: DeviceRegistry): DtlsMaterial {
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
  // Asked for whenever a device could present one; PSK handshakes never include the request.
  const requestClientCert = material.ca !== undefined || registry.hasCertificateDevices || config.requireClientCert;
  return { ...material, requestClientCert };
}

/** The binding names the material that failed: "cert: ...", "key: key values mismatch", "ciphers: ...". */
function describeDtlsError(error: Error, config: DtlsConfig): string {
  const [what, ...reason] = error.message.split(': ');
  const key = what as keyof DtlsConfig;
  if (reason.length > 0 && key in config) {
    const value = key === 'ciphers' ? config.ciphers : `"${String(config[key])}"`;
    return `dtls.${key} ${value}: ${reason.join(': ')}`;
  }
  return `cannot start DTLS: ${error.message}`;
}

/** Keys a reload applies; any other changed key waits for a restart. */
/** How much earlier than the piggyback window a package GET gives up waiting for its image. */
const PIGGYBACK_MARGIN_MS = 100;

const RELOADABLE_KEYS = new Set(['devices', 'devicesFile', 'dtls.cert', 'dtls.key', 'dtls.ca', 'log.level']);

/** Leaf keys ("coap.port") whose values differ; `devices` compares as one key. */
function changedKeys(before: GatewayConfig, after: GatewayConfig): string[] {
  const flat = (value: unknown, prefix: string, into: Map<string, string>): Map<string, string> => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value)) {
      for (const [key, child] of Object.entries(value)) flat(child, prefix ? `${prefix}.${key}` : key, into);
    } else into.set(prefix, JSON.stringify(value));
    return into;
  };
  const a = flat(before, '', new Map());
  const b = flat(after, '', new Map());
  return [...new Set([...a.keys(), ...b.keys()])].filter((key) => a.get(key) !== b.get(key));
}
