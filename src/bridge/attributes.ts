import type { AttributeSet, Device, UplinkOutcome } from '../model.js';
import { MessageTooLargeError, attributesItem, type UplinkItem } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';

/**
 * Client-side attributes reported by a device → `v1/gateway/attributes`. Once they are safe on their way
 * they are remembered, so a GET /attributes without keys can be answered locally.
 */
export async function forwardClientAttributes(context: BridgeContext, device: Device, attributes: AttributeSet): Promise<UplinkOutcome> {
  if (Object.keys(attributes).length === 0) return context.uplink.send(device, []);
  let item: UplinkItem;
  try {
    item = attributesItem(device.name, attributes, context.upstream.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) {
      return { status: 'too-large', reason: `the attributes are too large for ThingsBoard: ${error.message}` };
    }
    throw error;
  }
  const outcome = await context.uplink.send(device, [item]);
  if (outcome.status === 'accepted') context.attributes.mergeClient(device.name, attributes);
  return outcome;
}
