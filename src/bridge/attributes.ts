import type { AttributeSet, Device, UplinkOutcome } from '../model.js';
import { MessageTooLargeError, Topic, attributesMessage } from '../upstream/gateway-api.js';
import { deliverForDevice, type UplinkContext } from './deliver.js';

/** Client-side attributes reported by a device → `v1/gateway/attributes`. */
export function forwardClientAttributes(context: UplinkContext, device: Device, attributes: AttributeSet): Promise<UplinkOutcome> {
  if (Object.keys(attributes).length === 0) return deliverForDevice(context, device, Topic.attributes, []);
  let message: string;
  try {
    message = attributesMessage(device.name, attributes, context.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) {
      return Promise.resolve({ status: 'too-large', reason: `the attributes are too large for ThingsBoard: ${error.message}` });
    }
    throw error;
  }
  return deliverForDevice(context, device, Topic.attributes, [message]);
}
