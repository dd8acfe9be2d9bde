import type { Device, TelemetryRecord, UplinkOutcome } from '../model.js';
import { MessageTooLargeError, telemetryItems, type UplinkItem } from '../upstream/gateway-api.js';
import type { UplinkContext } from './context.js';

/** Device telemetry → `v1/gateway/telemetry`, split under the broker's message size limit. */
export function forwardTelemetry(context: UplinkContext, device: Device, records: readonly TelemetryRecord[]): Promise<UplinkOutcome> {
  let items: UplinkItem[];
  try {
    items = telemetryItems(device.name, records, context.upstream.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) {
      return Promise.resolve({ status: 'too-large', reason: `one telemetry record is too large for ThingsBoard: ${error.message}` });
    }
    throw error;
  }
  return context.uplink.send(device, items);
}
