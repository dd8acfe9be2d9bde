// The translation core, in the project's own words. Device-facing edges call these; only these talk to
// the upstream port.
import type { AttributeSet, Device, TelemetryRecord, UplinkOutcome } from '../model.js';
import { forwardClientAttributes } from './attributes.js';
import type { UplinkContext } from './deliver.js';
import { forwardTelemetry } from './telemetry.js';

export interface Bridge {
  telemetry(device: Device, records: readonly TelemetryRecord[]): Promise<UplinkOutcome>;
  clientAttributes(device: Device, attributes: AttributeSet): Promise<UplinkOutcome>;
}

export function createBridge(context: UplinkContext): Bridge {
  return {
    telemetry: (device, records) => forwardTelemetry(context, device, records),
    clientAttributes: (device, attributes) => forwardClientAttributes(context, device, attributes),
  };
}
