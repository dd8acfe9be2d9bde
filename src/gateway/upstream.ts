// Phase 2 of a start: the one MQTT connection to ThingsBoard, built but not yet started. Without
// upstream.url an embedded broker on loopback stands in for ThingsBoard.
import type { GatewayConfig } from '../config/load.js';
import type { Parts } from '../lifecycle.js';
import type { ComponentLoggers } from '../log.js';
import { StartupError } from '../startup-error.js';
import { UpstreamConnection } from '../upstream/connection.js';

export interface Upstream {
  readonly upstream: UpstreamConnection;
  /** The broker actually used (the embedded one's address when upstream.url is empty). */
  readonly upstreamUrl: string;
  /** 0 with the embedded broker, which is no ThingsBoard and answers no getSessionLimits. */
  readonly sessionLimitsTimeoutMs: number;
}

export async function buildUpstream(config: GatewayConfig, clientId: string, logs: ComponentLoggers, parts: Parts): Promise<Upstream> {
  let upstreamUrl = config.upstream.url;
  let embedded = false;
  if (upstreamUrl === '') {
    try {
      // Loaded only in embedded mode: aedes costs ~14 MB of memory a ThingsBoard-connected box never needs.
      const { startEmbeddedBroker } = await import('../upstream/embedded-broker.js');
      const broker = await startEmbeddedBroker(config.embeddedBroker.host, config.embeddedBroker.port, logs.for('embedded-broker'));
      parts.add('embedded broker', broker, (started) => started.close());
      upstreamUrl = broker.url;
      embedded = true;
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
  }
  // Nobody would answer the embedded broker's getSessionLimits: the first readings would wait for that silence.
  const sessionLimitsTimeoutMs = embedded ? 0 : config.upstream.sessionLimitsTimeoutMs;
  const upstream = parts.add(
    'upstream',
    new UpstreamConnection({ ...config.upstream, url: upstreamUrl, clientId, sessionLimitsTimeoutMs }, logs.for('upstream')),
    (connection) => connection.stop(),
  );
  return { upstream, upstreamUrl, sessionLimitsTimeoutMs };
}
