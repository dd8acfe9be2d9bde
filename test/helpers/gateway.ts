import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type GatewayConfig } from '../../src/config/load.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createLogger } from '../../src/log.js';

export interface TestGateway {
  readonly gateway: Gateway;
  /** The configuration it runs on, as loaded (devicesFile absolute). */
  readonly config: GatewayConfig;
  readonly port: number;
  readonly uri: (path: string) => string;
  /** Every log line the gateway wrote, parsed. */
  readonly logs: Array<Record<string, unknown>>;
  /** Resolves once the gateway's upstream MQTT connection is up. */
  upstreamConnected(): Promise<void>;
  stop(): Promise<void>;
}

export const DEVICES = [
  { name: 'Boiler-7', type: 'thermostat', token: 'boiler-token-7' },
  { name: 'Pump-2', type: 'pump', token: 'pump-token-2' },
];

/** Starts a whole gateway in this process from a config object, loaded through the real config loader. */
export async function startTestGateway(config: Record<string, unknown>): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-test-'));
  const file = join(dir, 'config.json');
  // A bare mosquitto never answers getSessionLimits: tests do not wait for it unless they ask to.
  const upstream = { sessionLimitsTimeoutMs: 0, ...(config.upstream as Record<string, unknown> | undefined) };
  writeFileSync(
    file,
    JSON.stringify({ coap: { host: '127.0.0.1', port: 0 }, http: { port: 0 }, devices: DEVICES, state: { dir: join(dir, 'state') }, ...config, upstream }),
  );
  const loaded = loadConfig({ file, env: {} });
  if (!loaded.ok) throw new Error(`test config invalid: ${loaded.errors.join('; ')}`);
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger('debug', {
    write(line: string) {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    },
  });
  const gateway = await startGateway(loaded.config, log);
  const { address, port } = gateway.coapAddress;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    gateway,
    config: loaded.config,
    port,
    logs,
    uri: (path) => `coap://${host}:${port}${path}`,
    upstreamConnected: () =>
      new Promise<void>((resolve) => (gateway.upstream.connected ? resolve() : gateway.upstream.onConnected(resolve))),
    async stop() {
      await gateway.stop(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
