import type { Device, UplinkOutcome } from '../model.js';
import { nextPublish, type BatchRow } from '../upstream/batch.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { UplinkItem } from '../upstream/gateway-api.js';
import type { DevicePresence } from './presence.js';
import type { Uplink, Upstream } from './upstream-port.js';

const ACCEPTED: UplinkOutcome = { status: 'accepted' };

/**
 * The direct path (outbox.enabled false): publishes a device's items and reports the outcome only once the
 * broker has acknowledged all of them, so a device is told "created" for nothing less. While the broker is
 * unreachable devices hear 5.03 and keep their readings.
 */
export function createDirectUplink(upstream: Upstream, presence: DevicePresence): Uplink {
  return {
    async send(device: Device, items: readonly UplinkItem[]): Promise<UplinkOutcome> {
      if (!upstream.connected) {
        return {
          status: 'unavailable',
          reason: 'the gateway is not connected to ThingsBoard',
          retryAfterSeconds: upstream.retryAfterSeconds(),
        };
      }
      presence.ensureAnnounced(device);
      const rows: BatchRow[] = items.map((item) => ({ ...item, device: device.name }));
      const acknowledgements: Array<Promise<void>> = [];
      for (let start = 0; start < rows.length; ) {
        const publish = nextPublish(rows, start, upstream.maxMessageBytes);
        if ('oversized' in publish) {
          return { status: 'too-large', reason: `${publish.bytes} bytes exceed ThingsBoard's limit of ${upstream.maxMessageBytes}` };
        }
        acknowledgements.push(upstream.publish(publish.topic, publish.payload, { dataPoints: publish.points }));
        start += publish.rows;
      }
      try {
        await Promise.all(acknowledgements);
        return ACCEPTED;
      } catch (error) {
        if (error instanceof UpstreamUnavailableError) {
          return { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds };
        }
        throw error;
      }
    },
  };
}
