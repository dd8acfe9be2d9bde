import type { Device, TelemetryRecord, UplinkOutcome } from '../model.js';
import { MessageTooLargeError, Topic, telemetryMessages } from '../upstream/gateway-api.js';
import { deliverForDevice, type UplinkContext } from './deliver.js';

/** Device telemetry → `v1/gateway/telemetry`, split under the broker's message size limit. */
export function forwardTelemetry(context: UplinkContext, device: Device, records: readonly TelemetryRecord[]): Promise<UplinkOutcome> {
  let messages: string[];
  try {
    messages = telemetryMessages(device.name, records, context.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) {
      return Promise.resolve({ status: 'too-large', reason: `one telemetry record is too large for ThingsBoard: ${error.message}` });
    }
    throw error;
  }
  return deliverForDevice(context, device, Topic.telemetry, messages);
}
