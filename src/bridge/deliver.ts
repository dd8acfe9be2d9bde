import type { Device, UplinkOutcome } from '../model.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { DevicePresence } from './presence.js';
import type { Upstream } from './upstream-port.js';

export interface UplinkContext {
  readonly upstream: Upstream;
  readonly presence: DevicePresence;
  readonly maxMessageBytes: number;
}

const DELIVERED: UplinkOutcome = { status: 'delivered' };

/**
 * Publishes a device's messages and reports the outcome only once the broker has acknowledged all of
 * them: the device is told "created" for nothing less (acknowledge-after-PUBACK).
 */
export async function deliverForDevice(
  context: UplinkContext,
  device: Device,
  topic: string,
  messages: readonly string[],
): Promise<UplinkOutcome> {
  const { upstream, presence } = context;
  if (!upstream.connected) {
    return {
      status: 'unavailable',
      reason: 'the gateway is not connected to ThingsBoard',
      retryAfterSeconds: upstream.retryAfterSeconds(),
    };
  }
  presence.ensureAnnounced(device);
  if (messages.length === 0) return DELIVERED;
  try {
    await Promise.all(messages.map((message) => upstream.publish(topic, message)));
    return DELIVERED;
  } catch (error) {
    if (error instanceof UpstreamUnavailableError) {
      return { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds };
    }
    throw error;
  }
}
