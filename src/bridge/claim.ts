import type { Device, UplinkOutcome } from '../model.js';
import { claimItem, type ClaimRequest } from '../upstream/gateway-api.js';
import type { UplinkContext } from './context.js';

/** A device asks to be claimed by a customer → `v1/gateway/claim`. */
export function claimDevice(context: UplinkContext, device: Device, claim: ClaimRequest): Promise<UplinkOutcome> {
  return context.uplink.send(device, [claimItem(device.name, claim)]);
}
