import type { Logger } from 'pino';
import type { LogOncePer } from '../log.js';
import type { AttributeStore } from '../devices/attribute-store.js';
import type { DeviceSessions } from '../devices/sessions.js';
import type { Device, JsonValue } from '../model.js';
import type { AttributeAnswer } from '../upstream/gateway-api.js';
import type { PackageSupply } from './firmware.js';
import type { PendingAnswers } from './pending-answers.js';
import type { RpcRoundTrips } from './rpc-round-trips.js';
import type { DevicePresence } from './presence.js';
import type { Uplink, Upstream } from './upstream-port.js';

/** What the uplink handlers need: where items go, and the live connection for limits and requests. */
export interface UplinkContext {
  readonly upstream: Upstream;
  readonly uplink: Uplink;
  readonly presence: DevicePresence;
}

/** The devices this gateway serves, by their name upstream (the registry). */
export interface DeviceDirectory {
  findByName(name: string): Device | undefined;
}

/** Everything the bridge handlers share; built once by createBridge. */
export interface BridgeContext extends UplinkContext {
  readonly devices: DeviceDirectory;
  readonly attributes: AttributeStore;
  readonly sessions: DeviceSessions;
  readonly attributeReads: PendingAnswers<AttributeAnswer>;
  readonly ownRpcs: PendingAnswers<JsonValue>;
  /** Server-side RPC timings, for the metrics endpoint. */
  readonly rpcRoundTrips: RpcRoundTrips;
  /** Firmware and software images for the devices' OTA packages. */
  readonly packages: PackageSupply;
  /** When ThingsBoard was last asked for a device's package assignment (at most once per window). */
  readonly packageAsks: LogOncePer;
  readonly log: Logger;
}
