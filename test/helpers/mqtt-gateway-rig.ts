// One in-process gateway for a whole end-to-end file, its MQTT device listener on a free port, upstream on
// the rig's mosquitto and ThingsBoard double (upstream-rig.ts): started once the gateway is connected
// upstream, stopped after the file's last test (before the rig's broker). The double forgets what it saw
// before each test as well as after, so the gateway's own start-up traffic never reaches the first test.
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { startTestGateway, type TestGateway } from './gateway.js';
import { upstreamRig, type UpstreamRig } from './upstream-rig.js';

export interface MqttGatewayRig extends UpstreamRig {
  /** Set before the file's first test. */
  readonly gw: TestGateway;
  /** The plain MQTT listener's port. */
  readonly port: number;
}

type Section = Record<string, unknown>;

/**
 * Registers the file's hooks. `configure` runs once the broker and the double are up (teach the double its
 * answers there) and returns the gateway's configuration; upstream (url, accessToken) and mqttDevices
 * (enabled on 127.0.0.1, port 0) have defaults its sections add to or override.
 */
export function mqttGatewayRig(
  configure: (rig: UpstreamRig) => Record<string, unknown> | Promise<Record<string, unknown>> = () => ({}),
): MqttGatewayRig {
  const rig = upstreamRig() as UpstreamRig & { gw: TestGateway; port: number };
  beforeAll(async () => {
    const config = await configure(rig);
    rig.gw = await startTestGateway({
      ...config,
      upstream: { url: rig.broker.url, accessToken: 'gateway-token', ...(config.upstream as Section | undefined) },
      mqttDevices: { enabled: true, host: '127.0.0.1', port: 0, ...(config.mqttDevices as Section | undefined) },
    });
    await rig.gw.upstreamConnected();
    rig.port = rig.gw.gateway.mqttAddresses!.plain.port;
  });
  // Registered after the rig's own afterAll, so it runs first (vitest runs after-hooks as a stack).
  afterAll(async () => {
    await rig.gw?.stop();
  });
  beforeEach(() => rig.tb.clear());
  return rig;
}
