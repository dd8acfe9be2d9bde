import dgram from 'node:dgram';
import * as coapPacket from 'coap-packet';

/**
 * A device made of a bare UDP socket, for exact control over datagrams (same message id twice,
 * malformed headers, no ACKs).
 */
export class UdpDevice {
  private readonly inbox: Buffer[] = [];
  private waiter: (() => void) | undefined;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly port: number,
    private readonly host: string,
  ) {
    socket.on('message', (datagram) => {
      this.inbox.push(datagram);
      this.waiter?.();
    });
  }

  /** `localAddress` picks the source address, e.g. 127.0.0.2 to be another host on loopback. */
  static async open(port: number, host = '127.0.0.1', localAddress?: string): Promise<UdpDevice> {
    const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((resolve) => socket.bind(0, localAddress, resolve));
    return new UdpDevice(socket, port, host);
  }

  send(datagram: Buffer): void {
    this.socket.send(datagram, this.port, this.host);
  }

  /** The next datagram from the gateway, or undefined if none comes within `timeoutMs`. */
  async next(timeoutMs = 2000): Promise<Buffer | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.inbox.shift();
  }

  async nextPacket(timeoutMs = 2000): Promise<coapPacket.ParsedPacket | undefined> {
    const datagram = await this.next(timeoutMs);
    return datagram ? coapPacket.parse(datagram) : undefined;
  }

  close(): void {
    this.socket.close();
  }
}

let nextMessageId = 1;

/** A CON (or NON) POST to `path` with a JSON body, as a device would send it. */
export function post(path: string, body: string | Buffer, options: { messageId?: number; confirmable?: boolean; token?: Buffer; extra?: coapPacket.Option[] } = {}): Buffer {
  return coapPacket.generate({
    code: 'POST',
    confirmable: options.confirmable ?? true,
    messageId: options.messageId ?? nextMessageId++,
    token: options.token ?? Buffer.from([0x11, 0x22]),
    options: [...path.split('/').filter(Boolean).map((segment) => ({ name: 'Uri-Path', value: Buffer.from(segment) })), ...(options.extra ?? [])],
    payload: typeof body === 'string' ? Buffer.from(body) : body,
  });
}

/** A GET, optionally with Observe (0 registers, 1 deregisters) and Uri-Query options. */
export function get(
  path: string,
  options: { observe?: number; messageId?: number; confirmable?: boolean; token?: Buffer; query?: string[] } = {},
): Buffer {
  const observe = options.observe === undefined ? [] : [{ name: 'Observe' as const, value: options.observe === 0 ? Buffer.alloc(0) : Buffer.from([options.observe]) }];
  return coapPacket.generate({
    code: 'GET',
    confirmable: options.confirmable ?? true,
    messageId: options.messageId ?? nextMessageId++,
    token: options.token ?? Buffer.from([0x33, 0x44]),
    options: [
      ...observe,
      ...path.split('/').filter(Boolean).map((segment) => ({ name: 'Uri-Path' as const, value: Buffer.from(segment) })),
      ...(options.query ?? []).map((item) => ({ name: 'Uri-Query' as const, value: Buffer.from(item) })),
    ],
  });
}

/** An empty ACK or RST for a message the gateway sent (a notification, a separate response). */
export function emptyReply(kind: 'ack' | 'reset', messageId: number): Buffer {
  return coapPacket.generate({ code: '0.00', ack: kind === 'ack', reset: kind === 'reset', messageId, token: Buffer.alloc(0) });
}

/** The Observe option's value of a received packet, or undefined. */
export function observeOf(packet: coapPacket.ParsedPacket): number | undefined {
  const option = packet.options.find((o) => o.name === 'Observe');
  if (!option) return undefined;
  let value = 0;
  for (const byte of option.value) value = (value << 8) | byte;
  return value;
}
