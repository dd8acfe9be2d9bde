// What differs between MQTT 3.1/3.1.1 and MQTT 5 for the gateway: the codes it answers with (MQTT 5 has
// reason codes where 3.1.1 can only close the connection) and what makes a session persistent. The codes
// are the ones ThingsBoard's MQTT transport sends in each version.
import type { IConnectPacket } from 'mqtt-packet';

export type ProtocolVersion = 3 | 4 | 5;

/** Why a CONNECT is refused, in the gateway's words. */
export type ConnectRefusal = 'bad-protocol' | 'identifier-rejected' | 'unavailable' | 'bad-credentials' | 'not-authorized';

/** MQTT 3.1.1 §3.2.2.3 return codes; ThingsBoard answers an unknown token 5 there. MQTT 5 §3.2.2.2 reason codes. */
const CONNACK_CODES: Readonly<Record<ConnectRefusal, readonly [v311: number, v5: number]>> = {
  'bad-protocol': [1, 0x84],
  'identifier-rejected': [2, 0x85],
  unavailable: [3, 0x88],
  'bad-credentials': [5, 0x86],
  'not-authorized': [5, 0x87],
};

export function connackCode(refusal: ConnectRefusal, version: ProtocolVersion): number {
  return CONNACK_CODES[refusal][version === 5 ? 1 : 0];
}

/** MQTT 5 PUBACK reason codes (3.1.1 has none: its PUBACK only says "received"). */
export const PUBACK_REASON = { success: 0, topicNameInvalid: 0x90, payloadFormatInvalid: 0x99 } as const;

/** SUBACK's refusal: 0x80 in 3.1.1, "topic filter invalid" in MQTT 5 (as ThingsBoard answers). */
export const subscribeFailure = (version: ProtocolVersion): number => (version === 5 ? 0x8f : 0x80);

/**
 * How a CONNECT wants its session: `clean` drops what was kept (3.1.1 clean session, MQTT 5 clean start);
 * `persistent` keeps it after the connection ends (3.1.1: not clean; MQTT 5: a session expiry interval).
 */
export function sessionOf(packet: IConnectPacket): { readonly clean: boolean; readonly persistent: boolean } {
  const clean = packet.clean !== false;
  if (packet.protocolVersion === 5) return { clean, persistent: (packet.properties?.sessionExpiryInterval ?? 0) > 0 };
  return { clean, persistent: !clean };
}
