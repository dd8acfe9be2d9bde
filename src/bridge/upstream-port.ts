// What the bridge needs from the upstream side, and nothing more (tests and the outbox stand in for it).
import type { Device, UplinkOutcome } from '../model.js';
import type { PublishOptions } from '../upstream/connection.js';
import type { SessionLimits, UplinkItem } from '../upstream/gateway-api.js';

export interface Upstream {
  readonly connected: boolean;
  /** Largest payload to publish now (the configured limit, or ThingsBoard's smaller one). */
  readonly maxMessageBytes: number;
  /** Most telemetry data points one publish may carry under ThingsBoard's rate limits. */
  readonly maxPointsPerPublish: number;
  /** Resolves on the broker's acknowledgement; rejects with UpstreamUnavailableError otherwise. */
  publish(topic: string, payload: string, options?: PublishOptions): Promise<void>;
  onConnected(listener: () => void): void;
  retryAfterSeconds(): number;
  /** What ThingsBoard answered to getSessionLimits (undefined: nothing in time); bulk traffic may then flow. */
  applySessionLimits(limits: SessionLimits | undefined): void;
}

/**
 * Where a device's uplink goes. Resolves once the items are safe — durably stored (the outbox) or
 * acknowledged by the broker (the direct path) — or says why not.
 */
export interface Uplink {
  send(device: Device, items: readonly UplinkItem[]): Promise<UplinkOutcome>;
}
