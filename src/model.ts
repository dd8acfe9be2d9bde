// The project's own words, shared by the device-facing edges and the bridge. Nothing here knows CoAP or MQTT.

/**
 * An integer a double cannot hold exactly (beyond ±2^53), kept as the digits the device sent: ThingsBoard
 * stores integers as 64-bit longs, so 9223372036854775807 must reach it as written. The upstream writer
 * puts the digits in the JSON; elsewhere it reads as the nearest double.
 */
export class ExactInteger {
  constructor(readonly digits: string) {}

  toJSON(): number {
    return Number(this.digits);
  }
}

export type JsonPrimitive = string | number | boolean | ExactInteger;
export type JsonValue = JsonPrimitive | null | JsonValue[] | { [key: string]: JsonValue };

/** A device as ThingsBoard knows it: its name there and its device profile ("type"). */
export interface Device {
  readonly name: string;
  readonly type: string;
}

/** Key-value readings measured at one moment. `ts` is always set: the device's own, or the receive time. */
/**
 * How a transport authenticated a device-facing peer: a DTLS PSK identity, or a DTLS client certificate
 * (its SHA-256 fingerprint as lowercase hex, and its subject's common name when it has one).
 */
export type PeerCredential =
  | { readonly kind: 'psk'; readonly identity: string }
  | { readonly kind: 'certificate'; readonly fingerprint256: string; readonly commonName: string | undefined; readonly subject: string };

export interface TelemetryRecord {
  readonly ts: number;
  readonly values: Readonly<Record<string, JsonValue>>;
}

export type AttributeSet = Readonly<Record<string, JsonValue>>;

/** What became of an uplink; the device-facing edge turns it into its own protocol's answer. */
export type UplinkOutcome =
  /** Safe: durably queued in the outbox, or acknowledged upstream (PUBACK). The device may forget it. */
  | { readonly status: 'accepted' }
  /** Not accepted; nothing is kept, so the device must send it again, no sooner than retryAfterSeconds. */
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number }
  /** The reading cannot be sent in one upstream message even after splitting; sending it again will not help. */
  | { readonly status: 'too-large'; readonly reason: string };

/** A server-side RPC for a device, as ThingsBoard sent it: `id` is ThingsBoard's, unchanged. */
export interface RpcCall {
  readonly id: number;
  readonly method: string;
  readonly params: JsonValue;
}

/** A shared-attribute push: changed values and/or deleted keys. */
export interface AttributeUpdate {
  readonly changed: AttributeSet;
  readonly deleted: readonly string[];
}

/** What a device-facing subscriber made of one delivery. */
export type DeliveryResult =
  /** The device confirmed receipt (a CON notification was acknowledged). */
  | 'acknowledged'
  /** Sent without confirmation (NON); it may or may not have arrived. */
  | 'sent'
  /** It did not reach the device: the subscription ended first. */
  | 'failed';

/**
 * A device-facing edge's handle on something a device listens to (an Observe relation today, an HTTP
 * long-poll later). The bridge hands it items in the project's words; the edge formats them.
 */
export interface Subscriber<T> {
  deliver(item: T): Promise<DeliveryResult>;
  /** The bridge ends it because a newer subscription of the same kind took its place. */
  replaced(): void;
  /** The bridge ends it because the device was removed or its credentials changed (a reload). */
  revoked(): void;
}
