// An in-process MQTT broker (aedes) on loopback, standing in for ThingsBoard when upstream.url is empty,
// so a fresh install runs end to end with nothing else installed. It has no authentication, which is why
// the configuration only lets it listen on a loopback address.
import net from 'node:net';
import { Aedes } from 'aedes';
import type { Logger } from 'pino';

export interface EmbeddedBroker {
  /** mqtt://host:port the gateway (and a curious technician's mosquitto_sub) connect to. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(host: string, port: number, log: Logger): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
  } catch (error) {
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new Error(
        `the embedded MQTT broker cannot listen on ${host}:${port}: the port is in use, probably by another MQTT broker. ` +
          'Either point upstream.url at that broker, or set embeddedBroker.port to a free port.',
      );
    }
    throw error;
  }
  const address = server.address() as net.AddressInfo;
  const shownHost = address.address.includes(':') ? `[${address.address}]` : address.address;
  const url = `mqtt://${shownHost}:${address.port}`;
  log.info(
    { url },
    'embedded MQTT broker started: data stays on this machine and is not sent to ThingsBoard; set upstream.url to send it there',
  );
  return {
    url,
    port: address.port,
    close: async () => {
      // Connected clients (ours included) are dropped by broker.close; the server then stops listening.
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
