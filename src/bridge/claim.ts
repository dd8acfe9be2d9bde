import type { Device, UplinkOutcome } from '../model.js';
import { Topic, claimMessage, type ClaimRequest } from '../upstream/gateway-api.js';
import { deliverForDevice, type UplinkContext } from './deliver.js';

/** A device asks to be claimed by a customer → `v1/gateway/claim`. */
export function claimDevice(context: UplinkContext, device: Device, claim: ClaimRequest): Promise<UplinkOutcome> {
  return deliverForDevice(context, device, Topic.claim, [claimMessage(device.name, claim)]);
}
