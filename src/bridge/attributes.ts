import type { AttributeSet, Device, UplinkOutcome } from '../model.js';
import { MessageTooLargeError, Topic, attributesMessage } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';
import { deliverForDevice } from './deliver.js';

/**
 * Client-side attributes reported by a device → `v1/gateway/attributes`. Once ThingsBoard has them they are
 * remembered, so a GET /attributes without keys can be answered locally.
 */
export async function forwardClientAttributes(context: BridgeContext, device: Device, attributes: AttributeSet): Promise<UplinkOutcome> {
  if (Object.keys(attributes).length === 0) return deliverForDevice(context, device, Topic.attributes, []);
  let message: string;
  try {
    message = attributesMessage(device.name, attributes, context.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) {
      return { status: 'too-large', reason: `the attributes are too large for ThingsBoard: ${error.message}` };
    }
    throw error;
  }
  const outcome = await deliverForDevice(context, device, Topic.attributes, [message]);
  if (outcome.status === 'delivered') context.attributes.mergeClient(device.name, attributes);
  return outcome;
}
