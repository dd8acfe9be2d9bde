import type { Device } from '../model.js';
import type { SubscriberKind, SubscriberKinds } from '../devices/sessions.js';
import type { BridgeContext } from './context.js';

export interface Subscription {
  /** Ends it (the device deregistered, or its relation died). Idempotent. */
  end(): void;
}

/**
 * What both kinds of observation share: one per kind per device (a newer one replaces the older, which is
 * told so), and the device stays connected upstream while it observes.
 */
export function subscribe<K extends SubscriberKind>(
  context: BridgeContext,
  device: Device,
  kind: K,
  subscriber: SubscriberKinds[K],
): Subscription {
  const previous = context.sessions.subscribe(device.name, kind, subscriber);
  if (previous) {
    context.log.info({ device: device.name, kind }, 'a newer observation replaces the previous one');
    previous.replaced();
  }
  const release = context.presence.hold(device);
  context.log.debug({ device: device.name, kind }, 'observation started');
  return {
    end() {
      release();
      if (context.sessions.unsubscribe(device.name, kind, subscriber)) {
        context.log.debug({ device: device.name, kind }, 'observation ended');
      }
    },
  };
}
