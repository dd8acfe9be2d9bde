import type { Logger } from 'pino';
import type { Device } from '../model.js';
import { Topic, connectMessage } from '../upstream/gateway-api.js';
import type { Upstream } from './upstream-port.js';

/**
 * Which devices ThingsBoard has been told about on the current MQTT session. ThingsBoard ties child
 * devices to the gateway's connection and creates unknown devices from the first message naming them, so
 * `v1/gateway/connect` (with the device profile) goes out before a device's first message, and again for
 * every active device after each reconnect.
 */
export class DevicePresence {
  private readonly active = new Map<string, Device>();
  private readonly announced = new Set<string>();

  constructor(
    private readonly upstream: Upstream,
    private readonly log: Logger,
  ) {
    upstream.onConnected(() => this.reannounce());
  }

  /** Queues the connect message ahead of the device's data, unless already sent on this session. */
  ensureAnnounced(device: Device): void {
    this.active.set(device.name, device);
    if (this.announced.has(device.name) || !this.upstream.connected) return;
    this.announce(device);
  }

  private reannounce(): void {
    this.announced.clear();
    for (const device of this.active.values()) this.announce(device);
    if (this.active.size > 0) this.log.info({ devices: this.active.size }, 're-announced active devices upstream');
  }

  private announce(device: Device): void {
    this.announced.add(device.name);
    // Not awaited: MQTT keeps order on the connection, so the data published next follows it. If it fails,
    // the data fails the same way, and the next session announces the device again.
    this.upstream.publish(Topic.connect, connectMessage(device)).catch((error: Error) => {
      this.log.debug({ device: device.name, reason: error.message }, 'device connect message not acknowledged');
    });
  }
}
