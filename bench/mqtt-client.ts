// The devices of the MQTT benches (mqtt-devices.ts against the gateway, mqtt-server-choice.ts against the
// candidate servers): raw sockets with a generated CONNECT (the token as username, keepalive 60 s, clean
// session), a copied QoS 1 PUBLISH of {"t":1} on v1/devices/me/telemetry with its message id patched
// (cheaper for the load generator than generate()), and mqtt-packet's parser for what comes back.
import net from 'node:net';
import { generate, parser, type IConnackPacket, type Packet } from 'mqtt-packet';

export const HOST = '127.0.0.1';
export const KEEPALIVE_S = 60;
/** Connections opened at once: below the listen backlog (511), so no SYN is dropped and retried 1 s later. */
const CONNECT_BATCH = 100;
const TOPIC = 'v1/devices/me/telemetry';
const PAYLOAD = Buffer.from('{"t":1}');

const PUBLISH_TEMPLATE = generate({ cmd: 'publish', topic: TOPIC, payload: PAYLOAD, qos: 1, messageId: 1, retain: false, dup: false });
const MESSAGE_ID_OFFSET = PUBLISH_TEMPLATE.length - PAYLOAD.length - 2;

export interface DeviceOptions {
  /** The CONNECT's client id for a token: the token itself unless given. */
  readonly clientId?: (token: string) => string;
  /** See RawDevice.batched. */
  readonly batched?: boolean;
}

/** A device on a raw socket: it sends generated packets and hands every packet received to `onPacket`. */
export class RawDevice {
  onPacket: (packet: Packet) => void = () => {};
  open = true;
  /** The publishes answering one read's PUBACKs leave in one write (else each in its own, as a device's would). */
  batched: boolean;
  /** When each message id was last published (performance.now()), for the PUBACK's latency. */
  readonly sentAt = new Float64Array(65_536);
  private nextMessageId = 1;

  private constructor(
    private readonly socket: net.Socket,
    options: DeviceOptions,
  ) {
    this.batched = options.batched ?? false;
    const packets = parser();
    packets.on('packet', (packet: Packet) => this.onPacket(packet));
    socket.on('data', (chunk: Buffer) => {
      if (this.batched) socket.cork();
      packets.parse(chunk);
      if (this.batched) socket.uncork();
    });
    socket.on('close', () => {
      this.open = false;
    });
    socket.on('error', () => undefined); // 'close' follows
  }

  static connect(port: number, token: string, options: DeviceOptions = {}): Promise<RawDevice> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: HOST, port, noDelay: true });
      const device = new RawDevice(socket, options);
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`${token}: connection closed before its CONNACK`)));
      device.onPacket = (packet) => {
        const returnCode = (packet as IConnackPacket).returnCode;
        if (packet.cmd === 'connack' && returnCode === 0) resolve(device);
        else reject(new Error(`${token}: expected CONNACK 0, got ${packet.cmd} ${returnCode ?? ''}`));
        device.onPacket = () => {};
      };
      const clientId = options.clientId?.(token) ?? token;
      socket.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: KEEPALIVE_S, username: token }));
    });
  }

  /** Sends one QoS 1 PUBLISH; returns its message id. */
  publish(): number {
    const messageId = this.nextMessageId;
    this.nextMessageId = (messageId % 65_535) + 1;
    const packet = Buffer.from(PUBLISH_TEMPLATE);
    packet.writeUInt16BE(messageId, MESSAGE_ID_OFFSET);
    this.sentAt[messageId] = performance.now();
    this.socket.write(packet);
    return messageId;
  }

  close(): Promise<void> {
    if (!this.open) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.destroy();
    });
  }
}

/** `count` devices, the tokens tokenOf(first) … tokenOf(first + count - 1), CONNACKed; CONNECT_BATCH at a time. */
export async function connectMany(
  port: number,
  count: number,
  first: number,
  tokenOf: (index: number) => string,
  options: DeviceOptions = {},
): Promise<RawDevice[]> {
  const devices: RawDevice[] = [];
  for (let start = 0; start < count; start += CONNECT_BATCH) {
    const batch = Array.from({ length: Math.min(CONNECT_BATCH, count - start) }, (_, i) => RawDevice.connect(port, tokenOf(first + start + i), options));
    devices.push(...(await Promise.all(batch)));
  }
  return devices;
}
