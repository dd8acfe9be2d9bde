// The project's own words, shared by the device-facing edges and the bridge. Nothing here knows CoAP or MQTT.

export type JsonPrimitive = string | number | boolean;
export type JsonValue = JsonPrimitive | null | JsonValue[] | { [key: string]: JsonValue };

/** A device as ThingsBoard knows it: its name there and its device profile ("type"). */
export interface Device {
  readonly name: string;
  readonly type: string;
}

/** Key-value readings measured at one moment. `ts` is always set: the device's own, or the receive time. */
export interface TelemetryRecord {
  readonly ts: number;
  readonly values: Readonly<Record<string, JsonValue>>;
}

export type AttributeSet = Readonly<Record<string, JsonValue>>;

/** What became of an uplink; the device-facing edge turns it into its own protocol's answer. */
export type UplinkOutcome =
  /** Accepted upstream (PUBACKed): the device may forget it. */
  | { readonly status: 'delivered' }
  /** Not accepted; nothing is kept, so the device must send it again, no sooner than retryAfterSeconds. */
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number }
  /** The reading cannot be sent in one upstream message even after splitting; sending it again will not help. */
  | { readonly status: 'too-large'; readonly reason: string };
