import { encodeJson, keyedRecord } from '../json-safety.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, Subscriber } from '../model.js';
import { requestScope } from './attribute-request.js';
import type { BridgeContext } from './context.js';
import { subscribe, type Subscription } from './subscription.js';

/** Stands in for "any key" when a device has no cached shared attribute to ask about. */
const KEEP_ALIVE_KEY = 'coap2mqttKeepAlive';

/** A shared-attribute push from ThingsBoard: remembered, then passed to the device's observer if it has one. */
export function handleSharedAttributePush(context: BridgeContext, deviceName: string, update: AttributeUpdate): void {
  context.attributes.applySharedUpdate(deviceName, update);
  const subscriber = context.sessions.subscriber(deviceName, 'attributes');
  if (!subscriber) {
    context.log.debug({ device: deviceName }, 'shared attributes updated; no observer');
    return;
  }
  void subscriber.deliver(update).then((result) => {
    if (result === 'failed') context.log.debug({ device: deviceName }, 'shared attribute update not delivered (observation ended); it is in the cache for the next observer');
  });
}

/** A device starts observing its shared attributes; a previous observer of the same device is told it was replaced. */
export function observeSharedAttributes(context: BridgeContext, device: Device, subscriber: Subscriber<AttributeUpdate>): Subscription {
  return subscribe(context, device, 'attributes', subscriber);
}

/**
 * Asks ThingsBoard again for the shared attributes the gateway knows of a device and tells its observer what
 * changed. Pushes made while the device was not connected upstream are never replayed (docs/thingsboard.md),
 * so this runs after every reconnection; as a keep-alive it also counts as the device's activity.
 */
export async function refreshSharedAttributes(context: BridgeContext, device: Device): Promise<void> {
  const before = context.attributes.shared(device.name);
  const known = Object.keys(before);
  const snapshot = { ...before };
  let found: AttributeSet | undefined;
  try {
    found = await requestScope(context, device, 'shared', known.length > 0 ? known : [KEEP_ALIVE_KEY]);
  } catch {
    return; // Upstream went away again; the next connection refreshes.
  }
  if (found === undefined || known.length === 0) return;
  const changed = keyedRecord<JsonValue>();
  const deleted: string[] = [];
  for (const key of known) {
    if (!Object.hasOwn(found, key)) deleted.push(key);
    else if (encodeJson(found[key]) !== encodeJson(snapshot[key])) changed[key] = found[key]!;
  }
  if (Object.keys(changed).length === 0 && deleted.length === 0) return;
  context.log.info({ device: device.name, changed: Object.keys(changed), deleted }, 'shared attributes changed while not connected upstream; observer notified');
  const subscriber = context.sessions.subscriber(device.name, 'attributes');
  if (Object.keys(changed).length > 0) void subscriber?.deliver({ changed, deleted: [] });
  if (deleted.length > 0) void subscriber?.deliver({ changed: {}, deleted });
}
