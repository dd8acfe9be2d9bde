// Operations that read what the gateway holds or asks ThingsBoard for: attribute reads, package images,
// and the update streams (shared-attribute pushes, server-side RPCs) a device subscribes to.
import type { Bridge, PackageKind, WrittenValue } from '../bridge/index.js';
import { packageDiagnostic } from '../bridge/index.js';
import { imageSlice } from '../firmware/image-store.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall } from '../model.js';
import { parseFirmwareQuery } from '../payload/provision.js';
import { parseAttributeKeys } from '../payload/thingsboard-json.js';
import { refuse, retryLater, type Answer, type Outcome, type UpdateSink } from './outcome.js';
import type { DeviceRequest } from './request.js';

/** GET /attributes?clientKeys=&sharedKeys=: as ThingsBoard answers it, {"client": {..}, "shared": {..}}. */
export function readAttributes(bridge: Bridge, request: DeviceRequest, device: Device): Answer {
  const keys = parseAttributeKeys(request.query);
  // Ending an observation (Observe 1) without keys: a plain answer, the current state.
  if (request.updates === 'close' && keys.client.length === 0 && keys.shared.length === 0) {
    return { kind: 'content', body: bridge.sharedAttributes(device) };
  }
  return bridge.readAttributes(device, keys).then((outcome): Outcome => {
    switch (outcome.status) {
      case 'found': {
        const body: Record<string, AttributeSet> = {};
        if (outcome.client) body['client'] = outcome.client;
        if (outcome.shared) body['shared'] = outcome.shared;
        return { kind: 'content', body };
      }
      case 'not-found':
        return refuse('not-found', 'none of the requested attributes exist');
      case 'timeout':
        return refuse('timeout', 'ThingsBoard did not answer the attribute request in time');
      case 'unavailable':
        return retryLater('unavailable', outcome);
    }
  });
}

/**
 * GET /firmware|software?title=&version=&size=&chunk=: the package image, from the one copy the gateway
 * holds for all devices; `size` and `chunk` select one slice of it, as ThingsBoard's transports do.
 * `waitMs`: how long the front end can wait for an image being downloaded. `which`: "assigned" serves
 * whichever package is assigned, without a title and version (ThingsBoard's MQTT chunk requests).
 */
export function readPackage(bridge: Bridge, request: DeviceRequest, device: Device, kind: PackageKind, waitMs: number, which: 'named' | 'assigned' = 'named'): Answer {
  const query = parseFirmwareQuery(request.query);
  if (!query.ok) return refuse('bad-request', query.error);
  const { title, version, size, chunk } = query.value;
  return bridge.otaPackage(device, kind, which === 'assigned' ? 'assigned' : { title, version }, waitMs).then((outcome): Outcome => {
    switch (outcome.status) {
      case 'ready':
        return { kind: 'package', ...imageSlice(outcome.image, size, chunk) };
      case 'not-assigned':
        return refuse('not-found', packageDiagnostic(outcome, kind, title, version));
      case 'mismatch':
        return refuse('bad-request', packageDiagnostic(outcome, kind, title, version));
      case 'unavailable':
        return retryLater('unavailable', outcome);
      case 'refused':
        return refuse('bad-gateway', packageDiagnostic(outcome, kind, title, version));
    }
  });
}

/** The shapes a dialect gives a stream's items. */
export interface StreamShapes {
  readonly attributes?: (update: AttributeUpdate) => JsonValue;
  readonly rpc?: (call: RpcCall) => JsonValue;
  /** The device's own writes told back to it (thethings.io). */
  readonly writes?: (values: readonly WrittenValue[]) => JsonValue;
}

/**
 * A stream of the device's updates: the bridge's items, shaped by the dialect, go to the front end's sink.
 * A newer subscription of the same device replaces this one; a reload that removes the device revokes it.
 */
export function updateStream(bridge: Bridge, device: Device, current: () => JsonValue | undefined, shapes: StreamShapes): Outcome {
  return {
    kind: 'updates',
    current,
    open(sink: UpdateSink) {
      const subscriber = <T>(shape: (item: T) => JsonValue) => ({
        deliver: (item: T) => sink.deliver(shape(item)),
        replaced: () => sink.replaced(),
        revoked: () => sink.revoked(),
      });
      const subscriptions = [];
      if (shapes.attributes) subscriptions.push(bridge.observeSharedAttributes(device, subscriber(shapes.attributes)));
      if (shapes.rpc) subscriptions.push(bridge.observeRpc(device, subscriber(shapes.rpc)));
      if (shapes.writes) subscriptions.push(bridge.observeWrites(device, subscriber(shapes.writes)));
      return subscriptions;
    },
  };
}

/** A push's `data` as ThingsBoard sends it: changed keys, or {"deleted": [..]}. */
export function updatePayload(update: AttributeUpdate): JsonValue {
  return update.deleted.length > 0 ? { ...update.changed, deleted: [...update.deleted] } : update.changed;
}

export function rpcPayload(call: RpcCall): JsonValue {
  return { id: call.id, method: call.method, params: call.params };
}
