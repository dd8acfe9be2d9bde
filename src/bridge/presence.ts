import type { Logger } from 'pino';
import type { Device } from '../model.js';
import { Topic, connectMessage, disconnectMessage } from '../upstream/gateway-api.js';
import type { Upstream } from './upstream-port.js';

export interface PresenceOptions {
  /** A device with no observation and no traffic for this long is disconnected upstream; 0 never. */
  readonly idleTimeoutMs: number;
  /** An observing device silent upstream for this long gets a keep-alive; 0 never. */
  readonly keepAliveIntervalMs: number;
}

interface ActiveDevice {
  device: Device;
  /** Last request from the device itself. */
  lastActivityAt: number;
  /** Last message naming the device sent upstream (ThingsBoard counts these as the device's activity). */
  lastUpstreamAt: number;
  observations: number;
}

const MAX_SWEEP_INTERVAL_MS = 30_000;

/**
 * Which devices ThingsBoard has been told about on the current MQTT session, and for how long they stay.
 * ThingsBoard ties child devices to the gateway's connection and creates unknown devices from the first
 * message naming them, so `v1/gateway/connect` (with the device profile) goes out before a device's first
 * message, and again for every active device after each reconnect. Observing devices stay connected (and
 * get keep-alives, since ThingsBoard marks silent children inactive after 10 minutes); others are
 * disconnected after their idle timeout so ThingsBoard shows them offline.
 */
export class DevicePresence {
  private readonly active = new Map<string, ActiveDevice>();
  private readonly announced = new Set<string>();
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  private keepAlive: ((device: Device) => void) | undefined;

  constructor(
    private readonly upstream: Upstream,
    private readonly options: PresenceOptions,
    private readonly log: Logger,
  ) {
    upstream.onConnected(() => this.reannounce());
    const periods = [options.idleTimeoutMs, options.keepAliveIntervalMs].filter((ms) => ms > 0);
    if (periods.length > 0) {
      const interval = Math.max(100, Math.min(MAX_SWEEP_INTERVAL_MS, ...periods.map((ms) => ms / 4)));
      this.sweepTimer = setInterval(() => this.sweep(), interval);
      this.sweepTimer.unref();
    }
  }

  /** What to send for an observing device that has been silent upstream for keepAliveIntervalMs. */
  onKeepAlive(listener: (device: Device) => void): void {
    this.keepAlive = listener;
  }

  /**
   * The device is active and a message naming it is about to go upstream: queue its connect message first,
   * unless already sent on this session.
   */
  ensureAnnounced(device: Device): void {
    const now = Date.now();
    const entry = this.track(device, now);
    entry.lastUpstreamAt = now;
    if (this.announced.has(device.name) || !this.upstream.connected) return;
    this.announce(device);
  }

  /** The device observes something: it stays connected upstream until the returned release is called. */
  hold(device: Device): () => void {
    this.ensureAnnounced(device);
    const entry = this.active.get(device.name)!;
    entry.observations++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.observations--;
      // The idle timeout counts from the end of the last observation.
      entry.lastActivityAt = Math.max(entry.lastActivityAt, Date.now());
    };
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }

  private track(device: Device, now: number): ActiveDevice {
    let entry = this.active.get(device.name);
    if (!entry) {
      entry = { device, lastActivityAt: now, lastUpstreamAt: 0, observations: 0 };
      this.active.set(device.name, entry);
    }
    entry.lastActivityAt = now;
    return entry;
  }

  private sweep(): void {
    const now = Date.now();
    const { idleTimeoutMs, keepAliveIntervalMs } = this.options;
    for (const entry of this.active.values()) {
      const name = entry.device.name;
      if (entry.observations === 0) {
        if (idleTimeoutMs > 0 && now - entry.lastActivityAt >= idleTimeoutMs) this.disconnect(entry);
      } else if (keepAliveIntervalMs > 0 && this.upstream.connected && now - entry.lastUpstreamAt >= keepAliveIntervalMs) {
        entry.lastUpstreamAt = now;
        this.log.debug({ device: name }, 'keep-alive for an observing device');
        this.keepAlive?.(entry.device);
      }
    }
  }

  private disconnect(entry: ActiveDevice): void {
    const name = entry.device.name;
    this.active.delete(name);
    if (!this.announced.delete(name) || !this.upstream.connected) return;
    this.log.info({ device: name, idleMs: Date.now() - entry.lastActivityAt }, 'device idle: disconnected upstream');
    this.upstream.publish(Topic.disconnect, disconnectMessage(name)).catch((error: Error) => {
      this.log.debug({ device: name, reason: error.message }, 'device disconnect message not acknowledged');
    });
  }

  private reannounce(): void {
    this.announced.clear();
    for (const entry of this.active.values()) this.announce(entry.device);
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
