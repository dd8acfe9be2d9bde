// MQTT.js as a device on the gateway's MQTT device listener, recording every packet both ways so a test can
// check what the gateway acknowledged and in which order. No automatic reconnection: a test that wants the
// device back connects a new one, as a firmware's reconnect would.
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient, type Packet } from 'mqtt';
import { eventually } from './ports.js';

export class MqttJsDevice {
  readonly sent: Packet[] = [];
  readonly received: Packet[] = [];
  /** Set once the connection has closed. */
  closedAt: number | undefined;

  private constructor(readonly client: MqttClient) {
    client.on('packetsend', (packet) => this.sent.push(packet));
    client.on('packetreceive', (packet) => this.received.push(packet));
    client.on('close', () => (this.closedAt ??= Date.now()));
    // A refused CONNACK and a cut connection surface as errors: the recorded packets say what happened.
    client.on('error', () => {});
  }

  /** Connects and waits for the CONNACK; resolves with the device whatever its return code. */
  static async open(url: string, options: IClientOptions = {}): Promise<MqttJsDevice> {
    const device = new MqttJsDevice(mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options }));
    await eventually(() => device.connack ?? (device.closedAt !== undefined ? device : undefined), 6000, `CONNACK from ${url}`);
    return device;
  }

  /** Connects and expects CONNACK 0. */
  static async connect(url: string, options: IClientOptions = {}): Promise<MqttJsDevice> {
    const device = await MqttJsDevice.open(url, options);
    // MQTT 3.1.1 says returnCode, MQTT 5 reasonCode.
    const code = device.connack?.returnCode ?? device.connack?.reasonCode;
    if (code !== 0) {
      device.close();
      throw new Error(`CONNACK ${String(code ?? 'none: the connection closed')} from ${url}`);
    }
    return device;
  }

  get connack(): IConnackPacket | undefined {
    return this.received.find((packet): packet is IConnackPacket => packet.cmd === 'connack');
  }

  /** Message ids of the QoS 1 PUBLISHes sent, in the order sent (a resend counts once). */
  publishIds(): number[] {
    const ids = this.sent.flatMap((packet) => (packet.cmd === 'publish' && packet.qos === 1 ? [packet.messageId!] : []));
    return [...new Set(ids)];
  }

  /** Message ids of the PUBACKs received, in the order received. */
  pubackIds(): number[] {
    return this.received.flatMap((packet) => (packet.cmd === 'puback' ? [packet.messageId!] : []));
  }

  /** The PUBLISHes the gateway sent on `topic` (a pattern). */
  publishesOn(topic: RegExp): Array<Extract<Packet, { cmd: 'publish' }>> {
    return this.received.filter((packet): packet is Extract<Packet, { cmd: 'publish' }> => packet.cmd === 'publish' && topic.test(packet.topic));
  }

  /** Publishes at QoS 1; the promise settles on the PUBACK (never, if none comes). */
  publish(topic: string, payload: string): Promise<unknown> {
    return this.client.publishAsync(topic, payload, { qos: 1 });
  }

  get open(): boolean {
    return this.closedAt === undefined;
  }

  close(): void {
    this.client.end(true);
  }
}

/** Whether `promise` settles within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
