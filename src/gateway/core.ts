// Phase 3 of a start: the translation core between the two edges. The device registry, presence, the
// firmware images, the outbox on the way up, the bridge, and provisioning; nothing listens yet.
import { join, resolve } from 'node:path';
import { createBridge, type Bridge } from '../bridge/index.js';
import { createDirectUplink } from '../bridge/deliver.js';
import { createProvisioner, type Provisioner } from '../bridge/provision.js';
import { DevicePresence } from '../bridge/presence.js';
import type { GatewayConfig } from '../config/load.js';
import { DeviceEnrolment } from '../devices/enrolment.js';
import { RecentValues } from '../devices/recent-values.js';
import { DeviceRegistry } from '../devices/registry.js';
import { FirmwareImageStore } from '../firmware/image-store.js';
import type { Parts } from '../lifecycle.js';
import type { ComponentLoggers } from '../log.js';
import { Outbox } from '../outbox/outbox.js';
import { SpillingUplink } from '../outbox/spilling-uplink.js';
import { DOWNLINK_TOPICS } from '../upstream/gateway-api.js';
import { requestProvisioning } from '../upstream/provision-client.js';
import type { GatewayState } from './state.js';
import type { Upstream } from './upstream.js';

export interface Core {
  readonly registry: DeviceRegistry;
  readonly enrolment: DeviceEnrolment;
  readonly images: FirmwareImageStore;
  /** Set when outbox.enabled. */
  readonly outbox: Outbox | undefined;
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
}

export function buildCore(config: GatewayConfig, state: GatewayState, up: Upstream, logs: ComponentLoggers, parts: Parts): Core {
  const { upstream } = up;
  const presence = parts.add('presence', new DevicePresence(upstream, config.sessions, logs.for('presence')), (part) => part.stop());
  const registry = new DeviceRegistry(config.devices);
  const images = parts.add(
    'firmware images',
    new FirmwareImageStore({ ...config.firmware, cacheDir: resolve(config.firmware.cacheDir || join(state.stateDir, 'firmware')) }, logs.for('firmware')),
    (part) => part.stop(),
  );
  const outbox =
    state.outboxStore &&
    parts.add(
      'outbox',
      new Outbox(state.outboxStore, upstream, (device) => presence.ensureAnnounced(device), { ...config.outbox, dir: state.stateDir }, logs.for('outbox')),
      // Before the connection closes: publishes on their way may still be acknowledged.
      (part) => part.stop(),
    );
  // mode "spill": straight upstream while ThingsBoard keeps up, the outbox only when it does not.
  const spilling =
    outbox && config.outbox.mode === 'spill'
      ? parts.add('spilling uplink', new SpillingUplink(outbox, upstream, presence, config.outbox.spillAfterMs, logs.for('outbox')), (part) => part.stop())
      : undefined;
  const bridge = createBridge({
    upstream,
    devices: registry,
    downlinkBounds: { maxBytes: config.upstream.maxDownlinkBytes, maxDepth: config.upstream.maxDownlinkDepth },
    uplink: spilling ?? outbox ?? createDirectUplink(upstream, presence),
    presence,
    attributes: state.attributes,
    sessions: config.sessions,
    ...(state.sessionStore ? { rpcJournal: state.sessionStore } : {}),
    sessionLimitsTimeoutMs: up.sessionLimitsTimeoutMs,
    packages: { store: images, tokenOf: (name) => registry.tokenOf(name) },
    // Only thethings.io's read asks for values back; without it nothing is kept.
    ...(config.thethings.enabled ? { recentValues: new RecentValues(config.thethings.valuesPerKey, config.thethings.maxSeries) } : {}),
    log: logs.for('bridge'),
  });
  parts.add('bridge', bridge, (part) => part.stop());
  upstream.subscribe(DOWNLINK_TOPICS);
  upstream.onMessage(bridge.handleDownlink);
  const enrolment = parts.add(
    'enrolment',
    new DeviceEnrolment(config.devicesFile, registry, (change) => bridge.revokeDevices(change.changed), logs.for('provision')),
    (part) => part.stop(),
  );
  const provisioner = createProvisioner({
    config: config.provision,
    enrolment,
    askUpstream: (request) => requestProvisioning({ url: up.upstreamUrl, upstream: config.upstream, timeoutMs: config.provision.timeoutMs }, request),
    announce: (device) => presence.ensureAnnounced(device),
    log: logs.for('provision'),
  });
  return { registry, enrolment, images, outbox, bridge, provisioner };
}
