// The Prometheus series of /metrics. Nothing here runs per CoAP request: the parts keep plain counters
// (stats(), the message layer's response table) and these are read at scrape time by prom-client
// `collect()` callbacks. Only the two histograms are fed as things happen, once per upstream PUBACK and
// once per server-side RPC, through the parts' listeners: a prom-client observe() there costs about
// 0.2 µs, and publishes carry many readings each.
//
// Labels never carry a path, token, device name, address or URL: a route is the operation asked for
// (telemetry, rpc_reply, ...), a code is "2.01", a reason is a fixed word.
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { DownlinkRefusals, RpcEnd, RpcStats } from '../bridge/index.js';
import type { ProvisionResult } from '../bridge/provision.js';
import type { SessionStoreStats } from '../state/session-store.js';
import type { MessageLayerStats } from '../coap/message-layer.js';
import type { RequestLimitsStats } from '../device-api/limits.js';
import type { ResponseCounts } from '../coap/response-counts.js';
import type { DtlsStats } from '../dtls/server.js';
import type { ConnectionGuardStats } from '../net/connection-guard.js';
import type { FirmwareImageStore } from '../firmware/image-store.js';
import type { DeviceHttpStats } from '../front-ends/http/server.js';
import type { MqttDevicesStats } from '../front-ends/mqtt/server.js';
import type { OutboxStats } from '../outbox/outbox.js';
import type { UpstreamStats } from '../upstream/connection.js';
import { registerGatewaySeries } from './metric-series.js';

export interface MetricsSources {
  readonly messageLayer: {
    readonly stats: MessageLayerStats;
    readonly responses: ResponseCounts;
    readonly remembered: { readonly entries: number; readonly bytes: number };
  };
  readonly limits: { stats(): RequestLimitsStats };
  readonly upstream: { stats(): UpstreamStats; onPuback(listener: (seconds: number) => void): void };
  /** Absent when outbox.enabled is false. */
  readonly outbox: { stats(): OutboxStats; readonly refusing: string | undefined } | undefined;
  /** Absent when dtls.enabled is false. */
  readonly dtls: { readonly stats: DtlsStats } | undefined;
  readonly bridge: {
    rpcStats(): RpcStats;
    onRpcEnd(listener: (end: RpcEnd, seconds: number) => void): void;
    downlinkRefusals(): Readonly<DownlinkRefusals>;
  };
  readonly provisioner: { stats(): Readonly<Record<ProvisionResult, number>> };
  readonly images: { stats(): FirmwareStoreStats };
  /** Absent when deviceHttp.enabled is false. */
  readonly deviceHttp?: { stats(): DeviceHttpStats } | undefined;
  /** Absent when mqttDevices.enabled is false. */
  readonly mqttDevices?: { stats(): MqttDevicesStats } | undefined;
  /** The connections of the health and metrics endpoint itself. */
  readonly opsHttp?: { stats(): ConnectionGuardStats } | undefined;
  /** Absent when sessions.persist is false or the store could not be opened. */
  readonly sessions?: { stats(): SessionStoreStats } | undefined;
  readonly devices: () => number;
  /** Devices are being served (what /healthz answers 200 for). */
  readonly ready: () => boolean;
}

type FirmwareStoreStats = ReturnType<FirmwareImageStore['stats']>;

export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

export class GatewayMetrics {
  private readonly registry = new Registry();

  constructor(sources: MetricsSources) {
    registerGatewaySeries(this.registry, sources);
  }

  /** The text exposition: this gateway's series, then the process's (CPU, memory, event loop, GC). */
  async render(): Promise<string> {
    const own = await this.registry.metrics();
    return `${own}\n${await processMetrics().metrics()}`;
  }
}

let processRegistry: Registry | undefined;

/**
 * How often the event-loop delay is sampled (a libuv timer, no JavaScript). prom-client's 10 ms costs an idle
 * gateway about 9 ms of CPU a second on the benchmark VM (100 wake-ups); 50 ms costs a fifth of that and
 * still catches every stall long enough to matter to a device's 2 s ACK timeout.
 */
const EVENT_LOOP_SAMPLE_MS = 50;

/**
 * prom-client's default Node.js and process metrics, once per process and from the first scrape on: they
 * describe the process, not one gateway, and prom-client cannot stop their event-loop delay monitor or
 * GC observer, so gateways started and stopped in one process (the tests) must not each add their own.
 * Their cost, measured: the delay monitor above; the GC observer makes Node report each garbage collection
 * (some tens of µs each; ~70 a second at 45k requests/s, so well under 1% of a core).
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }
  return processRegistry;
}
