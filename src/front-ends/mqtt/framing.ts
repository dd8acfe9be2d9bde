// MQTT's byte stream cut into whole packets before any parser sees them, so the size bound holds before
// a byte of an oversized packet is kept: the fixed header announces the length (a 1-4 byte varint, MQTT
// 3.1.1 §2.2.3), and a packet announcing more than maxPacketBytes ends the connection at once.

export type Frames = { readonly ok: true; readonly frames: Buffer[] } | { readonly ok: false; readonly reason: string };

export class MqttFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The whole size of the packet being gathered, once its header has been read. */
  private expected: number | undefined;

  constructor(private readonly maxPacketBytes: number) {}

  /** Bytes held for a packet not complete yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Frames {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Buffer[] = [];
    for (;;) {
      if (this.expected === undefined) {
        const header = this.readHeader();
        if (typeof header === 'string') return { ok: false, reason: header };
        if (header === undefined) return { ok: true, frames };
        this.expected = header;
      }
      if (this.buffered < this.expected) return { ok: true, frames };
      frames.push(this.take(this.expected));
      this.expected = undefined;
    }
  }

  /** The next packet's whole size, undefined until its header is complete, or why it is refused. */
  private readHeader(): number | string | undefined {
    const head = this.peek(5);
    let length = 0;
    for (let index = 1; index < 5; index++) {
      if (index >= head.length) return undefined;
      const byte = head[index]!;
      length += (byte & 0x7f) * 128 ** (index - 1);
      if ((byte & 0x80) === 0) {
        const size = index + 1 + length;
        if (size > this.maxPacketBytes) return `a packet of ${size} bytes is over the limit of ${this.maxPacketBytes} (mqttDevices.maxPacketBytes)`;
        return size;
      }
    }
    return 'malformed remaining length in a packet header';
  }

  /** Up to `count` bytes from the front, without consuming them. */
  private peek(count: number): Buffer {
    const first = this.chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length >= count || this.chunks.length === 1) return first.subarray(0, count);
    return Buffer.concat(this.chunks).subarray(0, count);
  }

  private take(size: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const frame = all.subarray(0, size);
    const rest = all.subarray(size);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return frame;
  }
}
