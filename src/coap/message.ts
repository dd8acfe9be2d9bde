// Datagram ⇄ CoAP message, on coap-packet. coap-packet is fast but lenient: it accepts token lengths
// 9–15, silently shortens an option whose declared length runs past the datagram, and drops a payload
// marker with nothing after it. RFC 7252 §3 calls all of these format errors, so the framing is checked
// here first (without allocating), and coap-packet only parses datagrams that passed.
import * as coapPacket from 'coap-packet';
import { MessageType, codeToString, type CodeByte } from './codes.js';

export interface CoapOption {
  readonly number: number;
  readonly value: Buffer;
}

export interface IncomingMessage {
  readonly type: MessageType;
  readonly code: CodeByte;
  readonly messageId: number;
  readonly token: Buffer;
  /** In wire order (ascending option number). */
  readonly options: readonly CoapOption[];
  readonly payload: Buffer;
}

export type Decoded =
  /** Too short to carry a message id, or a CoAP version we do not speak: RFC 7252 says ignore silently. */
  | { readonly kind: 'ignore'; readonly reason: string }
  /** A format error in a message whose header is readable: a CON gets a Reset, anything else is dropped. */
  | { readonly kind: 'malformed'; readonly type: MessageType; readonly messageId: number; readonly reason: string }
  | { readonly kind: 'message'; readonly message: IncomingMessage };

// coap-packet reports known options by name and the rest as decimal strings.
const OPTION_NUMBER_BY_NAME: Readonly<Record<string, number>> = {
  'If-Match': 1, 'Uri-Host': 3, ETag: 4, 'If-None-Match': 5, Observe: 6, 'Uri-Port': 7,
  'Location-Path': 8, OSCORE: 9, 'Uri-Path': 11, 'Content-Format': 12, 'Max-Age': 14, 'Uri-Query': 15,
  'Hop-Limit': 16, Accept: 17, 'Q-Block1': 19, 'Location-Query': 20, Block2: 23, Block1: 27, Size2: 28,
  'Q-Block2': 31, 'Proxy-Uri': 35, 'Proxy-Scheme': 39, Size1: 60, 'No-Response': 258,
  'OCF-Accept-Content-Format-Version': 2049, 'OCF-Content-Format-Version': 2053,
};

const optionNumber = (name: string | number): number =>
  typeof name === 'number' ? name : (OPTION_NUMBER_BY_NAME[name] ?? Number.parseInt(name, 10));

/**
 * Walks the option headers from `offset`; returns a reason if the framing is broken, else undefined.
 * Delta or length nibble 15 is reserved except in the payload marker 0xFF (RFC 7252 §3.1).
 */
function framingError(datagram: Buffer, offset: number): string | undefined {
  let at = offset;
  // Reads the extended delta/length that follows a nibble of 13 or 14; NaN if it is cut off.
  const extended = (nibble: number): number => {
    if (nibble < 13) return nibble;
    const bytes = nibble === 13 ? 1 : 2;
    if (at + bytes > datagram.length) return Number.NaN;
    const value = bytes === 1 ? 13 + datagram[at]! : 269 + datagram.readUInt16BE(at);
    at += bytes;
    return value;
  };
  while (at < datagram.length) {
    const header = datagram[at++]!;
    if (header === 0xff) return at === datagram.length ? 'payload marker with an empty payload' : undefined;
    if (header >> 4 === 15 || (header & 0x0f) === 15) return 'reserved option delta or length 15';
    const delta = extended(header >> 4);
    const length = extended(header & 0x0f);
    if (Number.isNaN(delta) || Number.isNaN(length) || at + length > datagram.length) {
      return 'an option runs past the end of the datagram';
    }
    at += length;
  }
  return undefined;
}

export function decodeMessage(datagram: Buffer): Decoded {
  if (datagram.length < 4) return { kind: 'ignore', reason: 'shorter than a CoAP header' };
  const first = datagram[0]!;
  if (first >> 6 !== 1) return { kind: 'ignore', reason: 'not CoAP version 1' };
  const type = ((first >> 4) & 3) as MessageType;
  const tokenLength = first & 0x0f;
  const messageId = datagram.readUInt16BE(2);
  const malformed = (reason: string): Decoded => ({ kind: 'malformed', type, messageId, reason });

  if (tokenLength > 8) return malformed(`reserved token length ${tokenLength}`);
  if (datagram[1] === 0) {
    // Empty message: anything after the 4-byte header is a format error (RFC 7252 §4.1).
    if (datagram.length !== 4) return malformed('empty message (code 0.00) with a token, options or payload');
    return { kind: 'message', message: { type, code: 0, messageId, token: EMPTY, options: [], payload: EMPTY } };
  }

  if (4 + tokenLength > datagram.length) return malformed('token runs past the end of the datagram');
  const framing = framingError(datagram, 4 + tokenLength);
  if (framing) return malformed(framing);

  let parsed: coapPacket.ParsedPacket;
  try {
    parsed = coapPacket.parse(datagram);
  } catch (error) {
    return malformed((error as Error).message);
  }
  const options: CoapOption[] = new Array(parsed.options.length);
  for (let i = 0; i < parsed.options.length; i++) {
    const option = parsed.options[i]!;
    options[i] = { number: optionNumber(option.name), value: option.value };
  }

  return {
    kind: 'message',
    message: { type, code: datagram[1]!, messageId, token: parsed.token, options, payload: parsed.payload },
  };
}

export interface OutgoingMessage {
  readonly type: MessageType;
  readonly code: CodeByte;
  readonly messageId: number;
  readonly token: Buffer;
  readonly options?: readonly CoapOption[];
  readonly payload?: Buffer;
}

export function encodeMessage(message: OutgoingMessage, maxBytes = 65507): Buffer {
  if ((message.options === undefined || message.options.length === 0) && (message.payload === undefined || message.payload.length === 0)) {
    // A bare code and token, as most answers are (2.01 Created, 2.04 Changed): built directly.
    const { token } = message;
    const datagram = Buffer.allocUnsafe(4 + token.length);
    datagram[0] = 0x40 | (message.type << 4) | token.length;
    datagram[1] = message.code;
    datagram.writeUInt16BE(message.messageId, 2);
    token.copy(datagram, 4);
    return datagram;
  }
  return coapPacket.generate(
    {
      code: codeToString(message.code),
      messageId: message.messageId,
      token: message.token,
      confirmable: message.type === MessageType.Confirmable,
      ack: message.type === MessageType.Acknowledgement,
      reset: message.type === MessageType.Reset,
      options: message.options ? message.options.map((o) => ({ name: o.number, value: o.value })) : [],
      payload: message.payload ?? EMPTY,
    },
    maxBytes,
  );
}

/** An empty ACK or RST (code 0.00): four bytes, built directly. */
export function encodeEmpty(type: MessageType.Acknowledgement | MessageType.Reset, messageId: number): Buffer {
  const datagram = Buffer.allocUnsafe(4);
  datagram[0] = 0x40 | (type << 4);
  datagram[1] = 0;
  datagram.writeUInt16BE(messageId, 2);
  return datagram;
}

/** Option values of type uint use the fewest bytes possible; zero is the empty value (RFC 7252 §3.2). */
export function encodeUint(value: number): Buffer {
  if (value === 0) return EMPTY;
  if (value < 0x100) return Buffer.from([value]);
  if (value < 0x10000) return Buffer.from([value >> 8, value & 0xff]);
  if (value < 0x1000000) return Buffer.from([value >> 16, (value >> 8) & 0xff, value & 0xff]);
  const four = Buffer.allocUnsafe(4);
  four.writeUInt32BE(value >>> 0);
  return four;
}

export function decodeUint(value: Buffer): number {
  let result = 0;
  for (const byte of value) result = result * 256 + byte;
  return result;
}

export const EMPTY: Buffer = Buffer.alloc(0);
