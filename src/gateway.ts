// Composition root: builds every part from its slice of the configuration, in phases that follow the data
// (state on disk → upstream → translation core → device-facing edge → listening), and registers each
// part with its stop (src/lifecycle.ts): a failed start and a stop unwind them in reverse. Uplink flows
// datagram → message layer → CoAP front end → device API → bridge → outbox → upstream; downlink the
// other way. The reload policy lives in src/ops/reload.ts.
import type { Logger } from 'pino';
import type { DtlsTransport } from './coap/dtls-transport.js';
import type { CoapMessageLayer } from './coap/message-layer.js';
import { ResponseCode } from './coap/codes.js';
import type { CoapResponse } from './coap/request.js';
import { formatPeer } from './coap/transport.js';
import type { GatewayConfig } from './config/load.js';
import type { RequestLimits } from './device-api/limits.js';
import { buildCore, type Core } from './gateway/core.js';
import { buildDeviceSide, mqttTlsReloader, type DeviceSide } from './gateway/device-side.js';
import { startListening, type Listening } from './gateway/listen.js';
import { openState, readSessions, type GatewayState } from './gateway/state.js';
import { buildUpstream } from './gateway/upstream.js';
import { Parts } from './lifecycle.js';
import { ComponentLoggers, redactUrl } from './log.js';
import type { BoundAddress } from './net/udp-socket.js';
import type { Outbox } from './outbox/outbox.js';
import type { OpsHttpServer } from './ops/http-server.js';
import { createReloader, type ReloadReport } from './ops/reload.js';
import { restoreSessions, type RestoreSummary } from './state/restore.js';
import { StartupError } from './startup-error.js';
import type { UpstreamConnection } from './upstream/connection.js';

export { ConfigurationError, StartupError } from './startup-error.js';
export type { ReloadReport } from './ops/reload.js';

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
  /** The MQTT device listeners (plain, then TLS when mqttDevices.tls); set when mqttDevices.enabled. */
  readonly mqttAddresses: { readonly plain: BoundAddress; readonly tls: BoundAddress | undefined } | undefined;
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

export async function startGateway(config: GatewayConfig, log: Logger): Promise<Gateway> {
  const logs = new ComponentLoggers(log, config.log.components);
  const parts = new Parts(log);
  // Registered first, so it stops last: /healthz says "stopping" while the rest drains.
  let http: OpsHttpServer | undefined;
  parts.onStop('health and metrics endpoint', () => http?.stop());
  try {
    const state = openState(config, logs, parts);
    const up = await buildUpstream(config, state.clientId, logs, parts);
    const core = buildCore(config, state, up, logs, parts);
    const edge = buildDeviceSide(config, state, core, logs, parts);
    const restoreStarted = performance.now();
    const restored = await restoreKept(config, state, core, edge, logs);
    const listening = await startListening(config, { state, up, core, edge }, logs, (created) => (http = created));
    await confirmRestored(restored, edge.messageLayer, logs, restoreStarted);
    logStarted(log, config, up.upstreamUrl, core.registry.size, core.outbox, listening);

    const mqttTls = edge.mqttDevices && config.mqttDevices.tls ? mqttTlsReloader(edge.mqttDevices) : undefined;
    const reload = createReloader(config, { ...core, dtls: edge.dtls, mqttTls, logs });
    let stopping: Promise<void> | undefined;
    return {
      stateDir: state.stateDir,
      logs,
      ...listening,
      dtls: edge.dtls?.transport,
      upstreamUrl: up.upstreamUrl,
      messageLayer: edge.messageLayer,
      limits: edge.limits,
      upstream: up.upstream,
      outbox: core.outbox,
      reload,
      stop(drainTimeoutMs = 5000) {
        stopping ??= (async () => {
          http?.beginStopping();
          await edge.messageLayer.drain(drainTimeoutMs);
          // What is written now comes back at the next start; only the other observers are told to register again.
          state.sessionStore?.flush();
          await edge.messageLayer.endObservations(RESTARTING, FAREWELL_WAIT_MS);
          await parts.unwind();
          log.info('coap2mqtt stopped');
        })();
        return stopping;
      },
    };
  } catch (error) {
    // A part failing to stop here is logged by unwind; the start's own failure is what the technician needs.
    await parts.unwind().catch(() => undefined);
    throw error instanceof StartupError ? error : new StartupError((error as Error).message);
  }
}

/**
 * Phase 5: what the session store kept goes back before ThingsBoard or any device can speak: a new RPC
 * must line up after the kept ones, and a device registering now must not be replaced by its own stale
 * relation.
 */
async function restoreKept(
  config: GatewayConfig,
  state: GatewayState,
  core: Core,
  edge: DeviceSide,
  logs: ComponentLoggers,
): Promise<RestoreSummary | undefined> {
  const store = state.sessionStore;
  const kept = store && readSessions(store, config.coap.maxObservations, logs.for('sessions'));
  if (!store || !kept) return undefined;
  const transports = edge.dtls ? [edge.udp, edge.dtls.transport] : [edge.udp];
  return restoreSessions(store, kept, core.bridge, edge.messageLayer, transports, edge.mqttDevices);
}

/** Once the sockets listen, each restored relation is confirmed with a notification of the current state. */
async function confirmRestored(restored: RestoreSummary | undefined, messageLayer: CoapMessageLayer, logs: ComponentLoggers, startedAt: number): Promise<void> {
  if (!restored) return;
  const confirming = await messageLayer.wakeRestored();
  if (restored.restored + restored.refused + restored.dropped + restored.rpcs + restored.mqttSessions > 0) {
    logs.for('sessions').info(
      { ...restored, confirming, ms: Math.round(performance.now() - startedAt) },
      'device sessions restored from before the restart: each Observe relation is confirmed with a notification of the current state (DTLS ones once their device handshakes again); refused ones belong to devices removed or given new credentials meanwhile',
    );
  }
}

function logStarted(log: Logger, config: GatewayConfig, upstreamUrl: string, devices: number, outbox: Outbox | undefined, listening: Listening): void {
  const { coapAddress, dtlsAddress, httpAddress, deviceHttpAddress, mqttAddresses } = listening;
  log.info(
    {
      coap: `udp ${formatPeer(coapAddress)}`,
      dtls: dtlsAddress ? `udp ${formatPeer(dtlsAddress)}` : 'off',
      http: httpAddress ? `http://${formatPeer(httpAddress)}/healthz, /metrics` : 'off',
      deviceHttp: deviceHttpAddress ? `http://${formatPeer(deviceHttpAddress)}/api/v1/` : 'off',
      mqttDevices: mqttAddresses ? [`mqtt://${formatPeer(mqttAddresses.plain)}`, ...(mqttAddresses.tls ? [`mqtts://${formatPeer(mqttAddresses.tls)}`] : [])].join(', ') : 'off',
      devices,
      upstream: redactUrl(upstreamUrl),
      outbox: outbox
        ? `${config.outbox.mode === 'spill' ? 'spill when ThingsBoard is down or slow' : 'every reading'}, ${config.outbox.synchronous} sync, ${outbox.stats().records} records waiting`
        : 'off (acknowledge after PUBACK)',
    },
    'coap2mqtt started',
  );
}

/** What an observer hears at a clean stop when its relation cannot come back (sessions.persist off, a store that failed). */
const RESTARTING: CoapResponse = {
  code: ResponseCode.ServiceUnavailable,
  payload: 'the gateway is stopping and cannot keep this observation; register again',
  maxAge: 10,
};
/** How long a stop waits for those observers to acknowledge that. */
const FAREWELL_WAIT_MS = 1000;
