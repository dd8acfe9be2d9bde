import type { Device, JsonValue, RpcCall, Subscriber, UplinkOutcome } from '../model.js';
import type { Dropped, PendingRpc } from '../devices/sessions.js';
import type { RestoredSessions } from '../state/session-store.js';
import { MessageTooLargeError, rpcReplyItem, type UplinkItem } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';
import { subscribe, type Subscription } from './subscription.js';

/**
 * A server-side RPC from ThingsBoard: to the device's RPC observer if it has one, otherwise kept for it
 * (sleeping devices register right after waking) until its time to live runs out.
 */
export function handleRpcRequest(context: BridgeContext, deviceName: string, call: RpcCall): void {
  context.rpcRoundTrips.arrived(deviceName, call.id);
  const pending = context.sessions.pendingRpc(deviceName, call);
  const subscriber = context.sessions.subscriber(deviceName, 'rpc');
  if (subscriber) {
    deliver(context, deviceName, subscriber, pending);
    return;
  }
  context.log.debug({ device: deviceName, rpcId: call.id, method: call.method }, 'RPC queued until the device observes /rpc');
  logDropped(context, deviceName, context.sessions.queueRpc(deviceName, pending));
}

/** A device starts observing /rpc: queued RPCs follow its registration, oldest first. */
export function observeRpc(context: BridgeContext, device: Device, subscriber: Subscriber<RpcCall>): Subscription {
  const subscription = subscribe(context, device, 'rpc', subscriber);
  const { live, dropped } = context.sessions.takeRpcs(device.name);
  logDropped(context, device.name, dropped);
  if (live.length > 0) context.log.info({ device: device.name, rpcs: live.length }, 'delivering queued RPCs');
  for (const pending of live) deliver(context, device.name, subscriber, pending);
  return subscription;
}

/** The device's answer to RPC `id` → `v1/gateway/rpc` `{"device","id","data"}`. */
export function replyToRpc(context: BridgeContext, device: Device, id: number, data: JsonValue): Promise<UplinkOutcome> {
  context.rpcRoundTrips.ended(device.name, id, 'replied');
  let item: UplinkItem;
  try {
    item = rpcReplyItem(device.name, id, data, context.upstream.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) return Promise.resolve({ status: 'too-large', reason: `the RPC reply is too large for ThingsBoard: ${error.message}` });
    throw error;
  }
  return context.uplink.send(device, [item]);
}

/** RPCs kept by an earlier run, back in their devices' queues; those of devices no longer served are dropped. */
export function restoreQueuedRpcs(context: BridgeContext, restored: Pick<RestoredSessions, 'rpcs' | 'lastRpcSequence'>): void {
  context.sessions.continueAfter(restored.lastRpcSequence);
  const saved = restored.rpcs;
  const served: RestoredSessions['rpcs'][number][] = [];
  for (const each of saved) {
    const { entry, saved: rpc } = each;
    if (context.devices.findByName(rpc.device) !== undefined) {
      served.push(each);
      continue;
    }
    context.sessions.settle({ call: rpc.call, sequence: rpc.sequence, expiresAt: rpc.expiresAt, entry });
    context.log.warn({ device: rpc.device, rpcId: rpc.call.id, method: rpc.call.method }, 'RPC kept from before the restart dropped: the device is no longer in devices or devicesFile');
  }
  for (const { saved: rpc } of served) context.rpcRoundTrips.arrived(rpc.device, rpc.call.id);
  for (const { device, ...dropped } of context.sessions.restoreRpcs(served)) logDropped(context, device, [dropped]);
  if (served.length > 0) context.log.info({ rpcs: served.length }, 'RPCs kept from before the restart are queued for their devices again');
}

/** Drops expired RPCs of devices that never came back; run periodically. */
export function expireQueuedRpcs(context: BridgeContext): void {
  for (const { device, ...dropped } of context.sessions.expireAll()) logDropped(context, device, [dropped]);
  context.rpcRoundTrips.expire();
}

function deliver(context: BridgeContext, deviceName: string, subscriber: Subscriber<RpcCall>, pending: PendingRpc): void {
  void subscriber.deliver(pending.call).then((result) => {
    if (result !== 'failed') {
      context.sessions.settle(pending);
      context.log.debug({ device: deviceName, rpcId: pending.call.id, result }, 'RPC delivered to the device');
      return;
    }
    // Not acknowledged before the observation ended: keep it for the device's next registration (at least
    // once, as with QoS 1), unless it has expired meanwhile.
    if (pending.expiresAt <= Date.now()) {
      context.sessions.settle(pending);
      logDropped(context, deviceName, [{ call: pending.call, reason: 'expired' }]);
      return;
    }
    context.log.info({ device: deviceName, rpcId: pending.call.id }, 'RPC not acknowledged by the device; queued for its next registration');
    const current = context.sessions.subscriber(deviceName, 'rpc');
    // A newer observation may already be in place: hand it over rather than wait for another registration.
    if (current && current !== subscriber) deliver(context, deviceName, current, pending);
    else context.sessions.requeueRpc(deviceName, pending);
  });
}

function logDropped(context: BridgeContext, deviceName: string, dropped: readonly Dropped[]): void {
  for (const { call, reason } of dropped) {
    context.rpcRoundTrips.ended(deviceName, call.id, 'dropped');
    context.log.warn({ device: deviceName, rpcId: call.id, method: call.method, reason }, 'RPC dropped without reaching the device');
  }
}
