// Phase 4 of a start: the device-facing edge. Limits, the device API, and its front ends: the CoAP
// message layer over UDP (and DTLS), the HTTP server. Built, not yet listening.
import { CoapMessageLayer } from '../coap/message-layer.js';
import type { DtlsTransport } from '../coap/dtls-transport.js';
import { UdpTransport } from '../coap/udp-transport.js';
import type { GatewayConfig } from '../config/load.js';
import { createDeviceApis } from '../device-api/index.js';
import { RequestLimits } from '../device-api/limits.js';
import { TokenCheck } from '../devices/token-check.js';
import { createDtlsListener, type DtlsMaterial } from '../front-ends/coap/dtls-listener.js';
import { coapAdmission, createCoapFrontEnd } from '../front-ends/coap/router.js';
import { createDeviceHttpApi } from '../front-ends/http/device-http.js';
import { DeviceHttpServer } from '../front-ends/http/server.js';
import { MqttDeviceServer } from '../front-ends/mqtt/server.js';
import { readFileSync } from 'node:fs';
import type { Parts } from '../lifecycle.js';
import type { ComponentLoggers } from '../log.js';
import type { Core } from './core.js';
import type { GatewayState } from './state.js';

/** How much earlier than the piggyback window a package GET gives up waiting for its image. */
const PIGGYBACK_MARGIN_MS = 100;

export interface DeviceSide {
  readonly limits: RequestLimits;
  readonly messageLayer: CoapMessageLayer;
  readonly udp: UdpTransport;
  /** Set when dtls.enabled, with the key material it was built from (a reload compares against it). */
  readonly dtls: { readonly transport: DtlsTransport; readonly material: DtlsMaterial } | undefined;
  /** Set when deviceHttp.enabled. */
  readonly deviceHttp: DeviceHttpServer | undefined;
  /** Set when mqttDevices.enabled. */
  readonly mqttDevices: MqttDeviceServer | undefined;
}

export function buildDeviceSide(config: GatewayConfig, state: GatewayState, core: Core, logs: ComponentLoggers, parts: Parts): DeviceSide {
  const { registry, bridge, provisioner } = core;
  const { coap } = config;
  const limits = new RequestLimits(config.limits, logs.for('limits'));
  const tokens = new TokenCheck(registry, limits, logs.for('thingsboard-api'));
  const apis = createDeviceApis({
    registry,
    bridge,
    provisioner,
    limits,
    tokens,
    thethings: config.thethings.enabled ? config.thethings : undefined,
    // A margin inside the piggyback window: the answer must beat the empty ACK.
    coapPackageWaitMs: Math.max(0, coap.piggybackWindowMs - PIGGYBACK_MARGIN_MS),
    log: (component) => logs.for(component),
  });
  const messageLayer = new CoapMessageLayer(
    {
      piggybackWindowMs: coap.piggybackWindowMs,
      maxBodyBytes: coap.maxRequestBodyBytes,
      maxBlockTransfers: coap.maxBlockTransfers,
      blockTransferIdleMs: coap.blockTransferIdleMs,
      dedupMaxEntries: coap.dedupMaxEntries,
      dedupMaxBytes: coap.dedupMaxBytes,
      maxBlockSize: coap.maxBlockSize,
      observeCheckIntervalMs: coap.observeCheckIntervalMs,
      maxObservations: coap.maxObservations,
      limits: coapAdmission(limits),
    },
    createCoapFrontEnd(apis.coap),
    logs.for('coap'),
  );
  parts.add('CoAP message layer', messageLayer, (part) => part.stop());
  if (state.sessionStore) messageLayer.useJournal(state.sessionStore);
  const udp = parts.add(
    'CoAP over UDP',
    new UdpTransport({ host: coap.host, port: coap.port, socketBufferBytes: coap.socketBufferBytes }, messageLayer.receive, logs.for('udp')),
    (part) => part.stop(),
  );
  const dtls = config.dtls.enabled
    ? createDtlsListener({ config: config.dtls, host: coap.host, socketBufferBytes: coap.socketBufferBytes, registry, sink: messageLayer.receive, log: logs.for('dtls') })
    : undefined;
  if (dtls) parts.add('CoAP over DTLS', dtls.transport, (part) => part.stop());
  const deviceHttp = config.deviceHttp.enabled
    ? parts.add('HTTP device API', new DeviceHttpServer(config.deviceHttp, createDeviceHttpApi(apis.http), logs.for('device-http')), (part) => part.stop())
    : undefined;
  const mqttDevices = config.mqttDevices.enabled
    ? parts.add('MQTT device API', new MqttDeviceServer(mqttOptions(config), apis.mqtt.api, apis.mqtt.dialect, bridge, logs.for('mqtt-devices'), state.sessionStore), (part) => part.stop())
    : undefined;
  return { limits, messageLayer, udp, dtls, deviceHttp, mqttDevices };
}

/** mqttDevices.*, with the TLS listener's PEM texts read (its files fall back to dtls.cert, key and ca). */
export function mqttOptions(config: GatewayConfig): ConstructorParameters<typeof MqttDeviceServer>[0] {
  const { mqttDevices, dtls } = config;
  const read = (path: string): string => readFileSync(path, 'utf8');
  const ca = mqttDevices.ca || dtls.ca;
  return {
    ...mqttDevices,
    tls: mqttDevices.tls
      ? { port: mqttDevices.tlsPort, cert: read(mqttDevices.cert || dtls.cert), key: read(mqttDevices.key || dtls.key), ca: ca === '' ? undefined : read(ca) }
      : undefined,
  };
}

/** A reload's new MQTT TLS material, read as at start and handed to the running listener. */
export function mqttTlsReloader(server: MqttDeviceServer): (next: GatewayConfig) => 'reloaded' | 'unchanged' {
  return (next) => {
    try {
      const tls = mqttOptions(next).tls;
      return tls ? server.replaceTls(tls) : 'unchanged';
    } catch (error) {
      // OpenSSL's "key values mismatch" alone does not say which files a technician should look at.
      const { mqttDevices, dtls } = next;
      throw new Error(`mqttDevices.cert "${mqttDevices.cert || dtls.cert}" / mqttDevices.key "${mqttDevices.key || dtls.key}": ${(error as Error).message}`, { cause: error });
    }
  };
}
