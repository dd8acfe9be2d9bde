// The translation core, in the project's own words. Device-facing edges call these; only these talk to
// the upstream port. Downlink messages come in through `handleDownlink` and leave through subscribers the
// edges registered.
import type { Logger } from 'pino';
import { LogOncePer } from '../log.js';
import type { SessionsConfig } from '../config/load.js';
import type { AttributeStore } from '../devices/attribute-store.js';
import type { RecentValue, RecentValues, RecentValuesQuery } from '../devices/recent-values.js';
import { DeviceSessions } from '../devices/sessions.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall, Subscriber, TelemetryRecord, UplinkOutcome } from '../model.js';
import type { AttributeAnswer, ClaimRequest, DownlinkBounds } from '../upstream/gateway-api.js';
import type { RestoredSessions, RpcJournal } from '../state/session-store.js';
import { readAttributes, type AttributeKeys, type AttributeReadOutcome } from './attribute-request.js';
import { forwardClientAttributes } from './attributes.js';
import { claimDevice } from './claim.js';
import { callClientRpc, type ClientRpcOutcome } from './client-rpc.js';
import type { BridgeContext, DeviceDirectory } from './context.js';
import { createDownlinkHandler, type DownlinkRefusals } from './downlink.js';
import { packageDiagnostic, packageFor, type PackageAsked, type PackageKind, type PackageOutcome, type PackageSupply } from './firmware.js';
import { OwnWrites, type WriteSubscriber, type WrittenValue } from './own-writes.js';
import { PendingAnswers } from './pending-answers.js';
import type { DevicePresence } from './presence.js';
import { expireQueuedRpcs, observeRpc, replyToRpc, restoreQueuedRpcs } from './rpc.js';
import { RpcRoundTrips, type RpcEnd, type RpcStats } from './rpc-round-trips.js';
import { createSessionLimitsAsker } from './session-limits.js';
import { observeSharedAttributes, refreshSharedAttributes } from './shared-attributes.js';
import type { Subscription } from './subscription.js';
import { forwardTelemetry } from './telemetry.js';
import type { Uplink, Upstream } from './upstream-port.js';

export { packageDiagnostic };
export type { AttributeKeys, AttributeReadOutcome, ClientRpcOutcome, DeviceDirectory, DownlinkRefusals, PackageAsked, PackageKind, PackageOutcome, RpcEnd, RpcStats, Subscription, WrittenValue };

export interface Bridge {
  telemetry(device: Device, records: readonly TelemetryRecord[]): Promise<UplinkOutcome>;
  /** The device's last accepted values of `key`, newest first (kept only when a dialect reads them back). */
  recentValues(device: Device, key: string, query: RecentValuesQuery): RecentValue[];
  clientAttributes(device: Device, attributes: AttributeSet): Promise<UplinkOutcome>;
  readAttributes(device: Device, keys: AttributeKeys): Promise<AttributeReadOutcome>;
  /** The device's shared attributes as the gateway knows them. */
  sharedAttributes(device: Device): AttributeSet;
  observeSharedAttributes(device: Device, subscriber: Subscriber<AttributeUpdate>): Subscription;
  observeRpc(device: Device, subscriber: Subscriber<RpcCall>): Subscription;
  /**
   * The device holds a connection open (MQTT): it stays present upstream until end(). `revoked` is called
   * when a reload removes the device or changes its credentials, so the front end can close the connection.
   */
  connected(device: Device, revoked: () => void): Subscription;
  /** The device's own accepted telemetry, told back to it (thethings.io's subscribe); a slow subscriber gets the latest. */
  observeWrites(device: Device, subscriber: WriteSubscriber): Subscription;
  rpcReply(device: Device, id: number, data: JsonValue): Promise<UplinkOutcome>;
  clientRpc(device: Device, method: string, params: JsonValue): Promise<ClientRpcOutcome>;
  claim(device: Device, claim: ClaimRequest): Promise<UplinkOutcome>;
  /**
   * The image of the device's firmware or software package, when `asked` names the one assigned (or
   * takes whichever is); "unavailable" when it is not ready within `answerWithinMs`.
   */
  otaPackage(device: Device, kind: PackageKind, asked: PackageAsked, answerWithinMs: number): Promise<PackageOutcome>;
  /** Ends the observations of devices a reload removed or gave new credentials. */
  revokeDevices(names: readonly string[]): void;
  /**
   * RPCs an earlier run kept for devices (the session store), back in their queues before any relation is
   * restored: they follow the devices' RPC observations like any queued RPC. Devices no longer served and
   * RPCs expired meanwhile are dropped and logged.
   */
  restoreQueuedRpcs(restored: Pick<RestoredSessions, 'rpcs' | 'lastRpcSequence'>): void;
  /** Everything arriving on the subscribed upstream topics. */
  handleDownlink(topic: string, payload: Buffer): void;
  /** Messages from upstream refused so far, by why. */
  downlinkRefusals(): Readonly<DownlinkRefusals>;
  /** Each server-side RPC's end: the device's reply or the gateway dropping it, with seconds since it arrived. */
  onRpcEnd(listener: (end: RpcEnd, seconds: number) => void): void;
  rpcStats(): RpcStats;
  stop(): void;
}

export interface BridgeDeps {
  readonly upstream: Upstream;
  /** Who the gateway serves: messages from upstream for anyone else are dropped. */
  readonly devices: DeviceDirectory;
  /** What a message from upstream may be at most (upstream.maxDownlinkBytes and maxDownlinkDepth). */
  readonly downlinkBounds: DownlinkBounds;
  /** Where uplinks go: the durable outbox, or straight upstream acknowledged by PUBACK. */
  readonly uplink: Uplink;
  /** Which devices ThingsBoard knows on the current session; shared with the outbox. */
  readonly presence: DevicePresence;
  readonly attributes: AttributeStore;
  readonly sessions: SessionsConfig;
  /** Where queued and undelivered RPCs are written down (sessions.persist); absent: memory only. */
  readonly rpcJournal?: RpcJournal;
  /** How long to wait for ThingsBoard's getSessionLimits answer after connecting; 0: do not ask. */
  readonly sessionLimitsTimeoutMs: number;
  readonly packages: PackageSupply;
  /** Set when a dialect reads values back (thethings.io); telemetry accepted is remembered there. */
  readonly recentValues?: RecentValues;
  readonly log: Logger;
}

const RPC_EXPIRY_SWEEP_MS = 10_000;
/** A device asking for a package it is not assigned makes ThingsBoard be asked again after this, not sooner. */
const PACKAGE_ASK_AGAIN_MS = 10_000;
/** A server-side RPC with no reply this long after it could last have been delivered is counted unanswered. */
const RPC_REPLY_GRACE_MS = 5 * 60_000;

export function createBridge(deps: BridgeDeps): Bridge {
  const { upstream, presence, sessions: options, log } = deps;
  const context: BridgeContext = {
    upstream,
    devices: deps.devices,
    uplink: deps.uplink,
    presence,
    attributes: deps.attributes,
    sessions: new DeviceSessions({ ttlMs: options.rpcQueueTtlMs, maxPerDevice: options.rpcQueueMax }, deps.rpcJournal),
    attributeReads: new PendingAnswers<AttributeAnswer>(options.attributeRequestTimeoutMs),
    ownRpcs: new PendingAnswers<JsonValue>(options.clientRpcTimeoutMs),
    rpcRoundTrips: new RpcRoundTrips(options.rpcQueueTtlMs + RPC_REPLY_GRACE_MS),
    packages: deps.packages,
    packageAsks: new LogOncePer(PACKAGE_ASK_AGAIN_MS),
    log,
  };
  const observers = new Map<string, Device>();
  /** Per device, how to close each of its open connections when a reload revokes it. */
  const connections = new Map<string, Set<() => void>>();
  const ownWrites = new OwnWrites(log);
  if (deps.sessionLimitsTimeoutMs > 0) upstream.onConnected(createSessionLimitsAsker(context, deps.sessionLimitsTimeoutMs));
  presence.onKeepAlive((device) => void refreshSharedAttributes(context, device));
  // After a reconnection (devices re-announced first): catch up on pushes missed while disconnected.
  upstream.onConnected(() => {
    for (const device of observers.values()) void refreshSharedAttributes(context, device);
  });
  const refusals: DownlinkRefusals = { too_large: 0, too_deep: 0, not_utf8: 0, not_json: 0, malformed: 0, unknown_device: 0 };
  const expiry = setInterval(() => expireQueuedRpcs(context), RPC_EXPIRY_SWEEP_MS);
  expiry.unref();

  return {
    async telemetry(device, records) {
      const outcome = await forwardTelemetry(context, device, records);
      if (outcome.status === 'accepted') {
        deps.recentValues?.record(device.name, records);
        ownWrites.written(device.name, records);
      }
      return outcome;
    },
    recentValues: (device, key, query) => deps.recentValues?.read(device.name, key, query) ?? [],
    clientAttributes: (device, attributes) => forwardClientAttributes(context, device, attributes),
    readAttributes: (device, keys) => readAttributes(context, device, keys),
    sharedAttributes: (device) => context.attributes.shared(device.name),
    observeSharedAttributes(device, subscriber) {
      const subscription = observeSharedAttributes(context, device, subscriber);
      observers.set(device.name, device);
      return {
        end() {
          subscription.end();
          if (!context.sessions.subscriber(device.name, 'attributes')) observers.delete(device.name);
        },
      };
    },
    observeRpc: (device, subscriber) => observeRpc(context, device, subscriber),
    connected(device, revoked) {
      const release = presence.hold(device);
      const own = connections.get(device.name) ?? new Set<() => void>();
      connections.set(device.name, own);
      own.add(revoked);
      return {
        end() {
          release();
          own.delete(revoked);
          if (own.size === 0 && connections.get(device.name) === own) connections.delete(device.name);
        },
      };
    },
    observeWrites: (device, subscriber) => ownWrites.subscribe(device, subscriber),
    rpcReply: (device, id, data) => replyToRpc(context, device, id, data),
    clientRpc: (device, method, params) => callClientRpc(context, device, method, params),
    claim: (device, claim) => claimDevice(context, device, claim),
    otaPackage: (device, kind, asked, answerWithinMs) => packageFor(context, device, kind, asked, answerWithinMs),
    revokeDevices(names) {
      for (const name of names) {
        for (const kind of ['attributes', 'rpc'] as const) context.sessions.subscriber(name, kind)?.revoked();
        for (const revoked of [...(connections.get(name) ?? [])]) revoked();
      }
      ownWrites.revoke(names);
    },
    restoreQueuedRpcs: (saved) => restoreQueuedRpcs(context, saved),
    handleDownlink: createDownlinkHandler(context, deps.downlinkBounds, refusals),
    downlinkRefusals: () => refusals,
    onRpcEnd: (listener) => context.rpcRoundTrips.onEnd(listener),
    rpcStats: () => context.rpcRoundTrips.stats(),
    stop() {
      clearInterval(expiry);
      context.attributeReads.cancel();
      context.ownRpcs.cancel();
    },
  };
}
