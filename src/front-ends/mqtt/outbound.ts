// What a connection writes to its device: packets encoded at the connection's protocol level and grouped
// per tick into one system call, the bytes the device leaves unread kept within a bound, and QoS 1
// PUBLISHes waiting for the device's PUBACK.
import type { Socket } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import type { DeliveryResult } from '../../model.js';
import type { ProtocolVersion } from './versions.js';

export type DeliveryCounts = Record<DeliveryResult, number>;

export class MqttOutbound {
  /** The CONNECT's protocol level: MQTT 5 packets carry properties and reason codes. */
  version: ProtocolVersion = 4;
  private open = true;
  private corked = false;
  /** The largest packet written since the unread bytes were last within the bound. */
  private oversized = 0;
  /** QoS 1 PUBLISHes to the device, by packet identifier, until its PUBACK. */
  private readonly awaitingPuback = new Map<number, (result: DeliveryResult) => void>();
  private nextMessageId = 1;

  constructor(
    private readonly socket: Socket,
    /** Bytes the device may leave unread; beyond them `slowReader` is told. */
    private readonly maxUnreadBytes: number,
    private readonly counts: DeliveryCounts,
    private readonly slowReader: (detail: string) => void,
  ) {}

  send(packet: Packet): void {
    if (!this.open) return;
    // Writes made together (the PUBACKs a group commit releases, a SUBACK's answers) leave in one system
    // call: the bench measured a third less CPU per message than one write each (bench/mqtt-server-choice.ts).
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
        this.checkUnread();
      });
    }
    const bytes = mqttPacket.generate(packet, { protocolVersion: this.version });
    // One answer bigger than the bound (a whole package asked with chunk size 0) is let through on its own.
    if (bytes.length > this.oversized) this.oversized = bytes.length;
    this.socket.write(bytes);
  }

  /** A PUBLISH to the device: QoS 1 resolves on its PUBACK (or 'failed' when the connection ends first), QoS 0 once written. */
  publish(topic: string, payload: Buffer | string, qos: 0 | 1): Promise<DeliveryResult> {
    if (!this.open) return Promise.resolve(this.count('failed'));
    if (qos === 0) {
      this.send({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false });
      return Promise.resolve(this.count(this.open ? 'sent' : 'failed'));
    }
    const messageId = this.allocateMessageId();
    if (messageId === undefined) return Promise.resolve(this.count('failed'));
    const acknowledged = new Promise<DeliveryResult>((resolve) => this.awaitingPuback.set(messageId, (result) => resolve(this.count(result))));
    this.send({ cmd: 'publish', topic, payload, qos: 1, messageId, retain: false, dup: false });
    return acknowledged;
  }

  /** The device's PUBACK for one of its PUBLISHes. */
  acknowledged(messageId: number): void {
    this.awaitingPuback.get(messageId)?.('acknowledged');
    this.awaitingPuback.delete(messageId);
  }

  /** The connection ends: nothing more is written, and what awaits a PUBACK has failed (an RPC goes back to its queue). */
  close(): void {
    this.open = false;
    for (const settle of this.awaitingPuback.values()) settle('failed');
    this.awaitingPuback.clear();
  }

  /** A free packet identifier (1-65535), or undefined when all are waiting for PUBACKs. */
  private allocateMessageId(): number | undefined {
    for (let tries = 0; tries < 65_535; tries++) {
      const id = this.nextMessageId;
      this.nextMessageId = id === 65_535 ? 1 : id + 1;
      if (!this.awaitingPuback.has(id)) return id;
    }
    return undefined;
  }

  /**
   * A device that stops reading does not make the gateway hold its messages without end. Measured once
   * the kernel was offered the corked bytes: before, a burst of updates written in one tick (5 × 20 KB
   * against a 64 KiB bound) closed a device that reads as fast as they come.
   */
  private checkUnread(): void {
    const unread = this.socket.writableLength;
    if (unread <= this.maxUnreadBytes) this.oversized = 0;
    const max = this.maxUnreadBytes + this.oversized;
    if (this.open && unread > max) this.slowReader(`more than ${max} bytes unread`);
  }

  private count(result: DeliveryResult): DeliveryResult {
    this.counts[result]++;
    return result;
  }
}
