// A raw TCP client for the MQTT device front end's tests: packets out with mqtt-packet (in MQTT 3.1.1 or
// 5), packets in with its parser, and when the gateway closed the socket. For what a well-behaved library
// would never do: stay silent, send a topic alias nobody allowed, stop reading its socket.
import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { eventually } from './ports.js';

export class RawMqttDevice {
  readonly packets: Packet[] = [];
  /** When the socket closed (ms since the epoch); undefined while open. */
  closedAt: number | undefined;
  readonly openedAt = Date.now();
  private readonly parser: ReturnType<typeof mqttPacket.parser>;

  private constructor(
    readonly socket: net.Socket,
    readonly protocolVersion: 4 | 5,
  ) {
    this.parser = mqttPacket.parser({ protocolVersion });
    this.parser.on('packet', (packet: Packet) => this.packets.push(packet));
    this.parser.on('error', () => {});
    socket.on('data', (chunk) => this.parser.parse(chunk));
    socket.on('error', () => {});
    socket.on('close', () => (this.closedAt ??= Date.now()));
  }

  /** A TCP connection to the gateway's MQTT port; nothing sent yet. */
  static open(port: number, protocolVersion: 4 | 5 = 4): Promise<RawMqttDevice> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(raw));
      const raw = new RawMqttDevice(socket, protocolVersion);
      socket.once('error', reject);
    });
  }

  /** Opens, CONNECTs as the device of `token` and waits for the CONNACK. */
  static async connect(port: number, token: string, options: { keepalive?: number; protocolVersion?: 4 | 5; clientId?: string } = {}): Promise<RawMqttDevice> {
    const raw = await RawMqttDevice.open(port, options.protocolVersion ?? 4);
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: raw.protocolVersion, clean: true, clientId: options.clientId ?? '', keepalive: options.keepalive ?? 60, username: token });
    await raw.waitFor('connack');
    return raw;
  }

  get closed(): boolean {
    return this.closedAt !== undefined;
  }

  /** A packet, generated in the connection's protocol version, or bytes as they are. */
  send(packet: Packet | Buffer): void {
    this.socket.write(Buffer.isBuffer(packet) ? packet : mqttPacket.generate(packet, { protocolVersion: this.protocolVersion }));
  }

  received(cmd: Packet['cmd']): Packet[] {
    return this.packets.filter((packet) => packet.cmd === cmd);
  }

  waitFor(cmd: Packet['cmd'], count = 1, timeoutMs = 5000): Promise<Packet[]> {
    return eventually(() => {
      const found = this.received(cmd);
      return found.length >= count ? found : undefined;
    }, timeoutMs, `${count} ${cmd} from the gateway`);
  }

  waitClosed(timeoutMs = 5000): Promise<number> {
    return eventually(() => this.closedAt, timeoutMs, 'the gateway to close the raw connection');
  }

  end(): void {
    this.socket.destroy();
  }
}
