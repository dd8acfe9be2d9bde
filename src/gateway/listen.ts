// Phase 6 of a start: everything built begins to work, upstream first so that a device's first reading
// finds a connection on its way up, then the sockets devices reach, the ops endpoint last.
import type { GatewayConfig } from '../config/load.js';
import { describeDeviceHttpBindError } from '../front-ends/http/server.js';
import { describeMqttBindError } from '../front-ends/mqtt/server.js';
import type { ComponentLoggers } from '../log.js';
import { describeBindError, type BoundAddress } from '../net/udp-socket.js';
import { OpsHttpServer, describeHttpBindError } from '../ops/http-server.js';
import { StartupError } from '../startup-error.js';
import type { Core } from './core.js';
import type { DeviceSide } from './device-side.js';
import type { GatewayState } from './state.js';
import type { Upstream } from './upstream.js';

export interface Listening {
  readonly coapAddress: BoundAddress;
  readonly dtlsAddress: BoundAddress | undefined;
  readonly deviceHttpAddress: BoundAddress | undefined;
  /** The MQTT device listeners, plain then TLS; set when mqttDevices.enabled. */
  readonly mqttAddresses: { readonly plain: BoundAddress; readonly tls: BoundAddress | undefined } | undefined;
  readonly httpAddress: BoundAddress | undefined;
  /** The health and metrics endpoint; set when http.enabled. */
  readonly http: OpsHttpServer | undefined;
}

export async function startListening(
  config: GatewayConfig,
  parts: { state: GatewayState; up: Upstream; core: Core; edge: DeviceSide },
  logs: ComponentLoggers,
  /** Called with the ops endpoint as soon as it exists, so a stop can close it even if its listen fails. */
  opsCreated: (http: OpsHttpServer) => void,
): Promise<Listening> {
  const { state, up, core, edge } = parts;
  const { coap } = config;
  try {
    up.upstream.start();
  } catch (error) {
    // Reading upstream.ca/cert/key can still fail here if the files changed since the config was checked.
    throw new StartupError(`cannot start the upstream connection: ${(error as Error).message}`);
  }
  core.outbox?.start();
  const coapAddress = await edge.udp.start().catch((error: NodeJS.ErrnoException) => {
    throw new StartupError(describeBindError(error, 'CoAP', coap.host, coap.port, 'coap.port'));
  });
  const dtlsAddress = await edge.dtls?.transport.start().catch((error: NodeJS.ErrnoException) => {
    throw new StartupError(describeBindError(error, 'DTLS', coap.host, config.dtls.port, 'dtls.port'));
  });
  const deviceHttpAddress = await edge.deviceHttp?.start().catch((error: NodeJS.ErrnoException) => {
    throw new StartupError(describeDeviceHttpBindError(error, config.deviceHttp.host, config.deviceHttp.port));
  });
  const { mqttDevices } = config;
  const mqttAddresses = await edge.mqttDevices?.start().catch((error: NodeJS.ErrnoException & { port?: number }) => {
    const tlsFailed = mqttDevices.tls && error.port === mqttDevices.tlsPort && mqttDevices.tlsPort !== mqttDevices.port;
    throw new StartupError(describeMqttBindError(error, mqttDevices.host, tlsFailed ? mqttDevices.tlsPort : mqttDevices.port, tlsFailed ? 'mqttDevices.tlsPort' : 'mqttDevices.port'));
  });
  if (!config.http.enabled) return { coapAddress, dtlsAddress, deviceHttpAddress, mqttAddresses, httpAddress: undefined, http: undefined };

  const { host, port } = config.http;
  const { messageLayer } = edge;
  const server = edge.dtls?.transport.server;
  const http = new OpsHttpServer(
    { host, port },
    {
      messageLayer,
      limits: edge.limits,
      upstream: up.upstream,
      outbox: core.outbox,
      dtls: server,
      bridge: core.bridge,
      provisioner: core.provisioner,
      images: core.images,
      deviceHttp: edge.deviceHttp,
      mqttDevices: edge.mqttDevices,
      sessions: state.sessionStore,
      devices: () => core.registry.size,
      observations: () => messageLayer.stats.observations,
      dtlsSessions: () => server?.stats.sessions,
      upstreamUrl: up.upstreamUrl,
    },
    logs.for('http'),
  );
  opsCreated(http);
  const httpAddress = await http.start().catch((error: NodeJS.ErrnoException) => {
    throw new StartupError(describeHttpBindError(error, host, port));
  });
  return { coapAddress, dtlsAddress, deviceHttpAddress, mqttAddresses, httpAddress, http };
}
