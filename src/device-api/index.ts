// The device API: one entry for every front end. A request, in no transport's words, goes to the dialect
// whose paths it uses; the dialect authenticates it, applies the limits and runs the operation; the
// outcome goes back to the front end to render (CoAP codes and options, HTTP statuses and headers).
import type { Logger } from 'pino';
import type { Bridge } from '../bridge/index.js';
import type { Provisioner } from '../bridge/provision.js';
import type { ThethingsConfig } from '../config/load.js';
import type { DeviceRegistry } from '../devices/registry.js';
import type { TokenCheck } from '../devices/token-check.js';
import { createGate, type Dialect, type Handled } from './dialect.js';
import { thethings } from './dialects/thethings.js';
import { thingsBoardCoap, thingsBoardHttp } from './dialects/thingsboard.js';
import { thingsBoardMqtt, type MqttDialect } from './dialects/thingsboard-mqtt.js';
import { createIdentify } from './identify.js';
import type { RequestLimits } from './limits.js';
import { Operation } from './operations.js';
import { refuse, type Refusal } from './outcome.js';
import type { DeviceRequest } from './request.js';
import { createUplinks } from './uplinks.js';

export interface DeviceApi {
  handle(request: DeviceRequest): Handled;
  /** The operation of a request the front end answered before the API saw it, for the request metrics. */
  classify(request: Pick<DeviceRequest, 'method' | 'updates' | 'segments'>): number;
}

export interface DeviceApiOptions {
  /** The dialects this front end serves, tried in order. */
  readonly dialects: readonly Dialect[];
  /**
   * The gateway-wide limit, when the front end has not applied it already (the CoAP message layer does,
   * before Block1 reassembly): asked once a dialect claims the path.
   */
  readonly admitRequest?: (now: number) => Refusal | undefined;
}

export function createDeviceApi(options: DeviceApiOptions): DeviceApi {
  const { dialects, admitRequest } = options;
  const hints = dialects.map((dialect) => dialect.hint).join(', ');
  const find = (segments: readonly string[]): { dialect: Dialect; own: readonly string[] } | undefined => {
    for (const dialect of dialects) {
      const own = dialect.claim(segments);
      if (own) return { dialect, own };
    }
    return undefined;
  };
  return {
    handle(request) {
      const found = find(request.segments);
      if (!found) return { operation: Operation.other, outcome: refuse('not-found', `no such path ${shortPath(request.segments)}; ${hints}`) };
      const busy = admitRequest?.(request.receivedAt);
      if (busy) return { operation: found.dialect.operationOf(request, found.own), outcome: { kind: 'refused', refusal: busy } };
      return found.dialect.handle(request, found.own);
    },
    classify(request) {
      const found = find(request.segments);
      return found ? found.dialect.operationOf(request, found.own) : Operation.other;
    },
  };
}

/** A path as a diagnostic may name it: enough to recognise, never an echo of a long request. */
function shortPath(segments: readonly string[]): string {
  const path = `/${segments.join('/')}`;
  return path.length <= 64 ? path : `${path.slice(0, 63)}…`;
}

export interface DeviceApisDeps {
  readonly registry: DeviceRegistry;
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  readonly limits: RequestLimits;
  readonly tokens: TokenCheck;
  /** thethings.io's dialect, when enabled. */
  readonly thethings: ThethingsConfig | undefined;
  /** How long a CoAP package GET may wait for its image (inside the piggyback window). */
  readonly coapPackageWaitMs: number;
  readonly log: (component: string) => Logger;
}

/** An HTTP client can wait for a package image being downloaded longer than a CoAP device (no piggyback window). */
const HTTP_PACKAGE_WAIT_MS = 20_000;

export interface DeviceApis {
  readonly coap: DeviceApi;
  readonly http: DeviceApi;
  /** ThingsBoard's MQTT topics; the dialect also authenticates a connection at CONNECT and names answer topics. */
  readonly mqtt: { readonly api: DeviceApi; readonly dialect: MqttDialect };
}

/** The device API as each front end serves it: CoAP with its dialects, HTTP and MQTT with ThingsBoard's. */
export function createDeviceApis(deps: DeviceApisDeps): DeviceApis {
  const { registry, bridge, provisioner, limits, tokens } = deps;
  const gate = createGate(limits);
  const thingsBoard = (log: Logger) => ({ bridge, provisioner, limits, gate, identify: createIdentify(registry, tokens, log), uplinks: createUplinks(bridge, log), log });
  const coapLog = deps.log('thingsboard-api');
  const coapDialects = [thingsBoardCoap(thingsBoard(coapLog), deps.coapPackageWaitMs)];
  if (deps.thethings) {
    const log = deps.log('thethings');
    coapDialects.push(thethings({ registry, bridge, provisioner, gate, tokens, uplinks: createUplinks(bridge, log), config: deps.thethings, log }));
  }
  const mqttLog = deps.log('mqtt-devices');
  const mqtt = thingsBoardMqtt({ ...thingsBoard(mqttLog), registry, packageWaitMs: HTTP_PACKAGE_WAIT_MS });
  return {
    coap: createDeviceApi({ dialects: coapDialects }),
    mqtt: { api: createDeviceApi({ dialects: [mqtt], admitRequest: (now) => limits.admitRequest(now) }), dialect: mqtt },
    http: createDeviceApi({
      dialects: [thingsBoardHttp(thingsBoard(deps.log('device-http')), HTTP_PACKAGE_WAIT_MS)],
      // The CoAP message layer asks it before Block1 reassembly; HTTP asks here.
      admitRequest: (now) => limits.admitRequest(now),
    }),
  };
}
