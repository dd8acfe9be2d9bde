import * as coapPacket from 'coap-packet';
import { describe, expect, it } from 'vitest';
import { MessageType, ResponseCode } from '../../src/coap/codes.js';
import { decodeMessage, decodeUint, encodeEmpty, encodeMessage, encodeUint } from '../../src/coap/message.js';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s/g, ''), 'hex');

describe('decodeMessage', () => {
  it('ignores datagrams too short for a header and other CoAP versions', () => {
    expect(decodeMessage(hex('40 01'))).toMatchObject({ kind: 'ignore' });
    expect(decodeMessage(hex('80 01 00 01'))).toMatchObject({ kind: 'ignore', reason: 'not CoAP version 1' });
  });

  it('reads a request with token, repeated options and payload', () => {
    const datagram = coapPacket.generate({
      code: 'POST',
      confirmable: true,
      messageId: 0xbeef,
      token: hex('0102030405060708'),
      options: [
        { name: 'Uri-Path', value: Buffer.from('api') },
        { name: 'Uri-Path', value: Buffer.from('v1') },
        { name: 'Content-Format', value: Buffer.from([50]) },
        { name: '2048', value: Buffer.from('x') },
      ],
      payload: Buffer.from('{"a":1}'),
    });
    const decoded = decodeMessage(datagram);
    expect(decoded.kind).toBe('message');
    if (decoded.kind !== 'message') return;
    expect(decoded.message).toMatchObject({ type: MessageType.Confirmable, code: 0x02, messageId: 0xbeef });
    expect(decoded.message.token.toString('hex')).toBe('0102030405060708');
    expect(decoded.message.options.map((o) => [o.number, o.value.toString()])).toEqual([
      [11, 'api'],
      [11, 'v1'],
      [12, '2'],
      [2048, 'x'],
    ]);
    expect(decoded.message.payload.toString()).toBe('{"a":1}');
  });

  it.each([
    ['token length 9 (reserved)', '49 02 00 07 010203040506070809', 'reserved token length 9'],
    ['token cut short', '44 02 00 07 0102', 'token runs past the end'],
    ['empty message with a token', '41 00 00 07 01', 'empty message'],
    ['option value cut short', '40 02 00 07 b3 6170', 'runs past the end'],
    ['extended option length cut short', '40 02 00 07 bd', 'runs past the end'],
    ['payload marker with no payload', '40 02 00 07 b1 61 ff', 'payload marker with an empty payload'],
    ['reserved option delta 15', '40 02 00 07 f1 61', 'reserved option delta or length 15'],
    ['reserved option length 15', '40 02 00 07 bf 61', 'reserved option delta or length 15'],
  ])('calls %s a format error and keeps the message id for the Reset', (_name, datagram, reason) => {
    const decoded = decodeMessage(hex(datagram));
    expect(decoded).toMatchObject({ kind: 'malformed', messageId: 7 });
    if (decoded.kind === 'malformed') expect(decoded.reason).toContain(reason);
  });

  it('accepts a 4-byte empty message (ping, empty ACK, RST)', () => {
    expect(decodeMessage(hex('40 00 12 34'))).toMatchObject({ kind: 'message', message: { type: 0, code: 0, messageId: 0x1234 } });
    expect(decodeMessage(hex('70 00 12 34'))).toMatchObject({ kind: 'message', message: { type: MessageType.Reset } });
  });
});

describe('encoding', () => {
  it('round-trips a response through coap-packet', () => {
    const datagram = encodeMessage({
      type: MessageType.Acknowledgement,
      code: ResponseCode.ServiceUnavailable,
      messageId: 513,
      token: hex('aa'),
      options: [{ number: 14, value: encodeUint(30) }],
      payload: Buffer.from('down'),
    });
    const parsed = coapPacket.parse(datagram);
    expect(parsed).toMatchObject({ code: '5.03', ack: true, messageId: 513, payload: Buffer.from('down') });
    expect(parsed.options).toEqual([{ name: 'Max-Age', value: Buffer.from([30]) }]);
  });

  it('builds a bare code and token exactly as coap-packet does', () => {
    for (const type of [MessageType.Confirmable, MessageType.NonConfirmable, MessageType.Acknowledgement]) {
      for (const token of [Buffer.alloc(0), hex('aa'), hex('0102030405060708')]) {
        const message = { type, code: ResponseCode.Created, messageId: 0xfe01, token };
        const reference = coapPacket.generate({
          code: '2.01',
          messageId: 0xfe01,
          token,
          confirmable: type === MessageType.Confirmable,
          ack: type === MessageType.Acknowledgement,
          options: [],
          payload: Buffer.alloc(0),
        });
        expect(encodeMessage(message).toString('hex')).toBe(reference.toString('hex'));
        expect(encodeMessage({ ...message, options: [], payload: Buffer.alloc(0) }).toString('hex')).toBe(reference.toString('hex'));
      }
    }
  });

  it('builds empty ACK and RST in four bytes', () => {
    expect(encodeEmpty(MessageType.Acknowledgement, 0xabcd).toString('hex')).toBe('6000abcd');
    expect(encodeEmpty(MessageType.Reset, 1).toString('hex')).toBe('70000001');
  });

  it('encodes uints minimally and decodes them back', () => {
    for (const value of [0, 1, 255, 256, 65535, 65536, 16_777_216, 0xffffffff]) {
      const encoded = encodeUint(value);
      expect(encoded.length).toBe(value === 0 ? 0 : Math.ceil(Math.log2(value + 1) / 8));
      expect(decodeUint(encoded)).toBe(value);
    }
  });
});
