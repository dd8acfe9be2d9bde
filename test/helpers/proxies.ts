import dgram from 'node:dgram';
import net from 'node:net';

/**
 * A UDP relay between one client and the gateway that can drop what the gateway sends back, to make a
 * real client retransmit exactly as it would after a lost ACK.
 */
export class LossyUdpProxy {
  private client: dgram.RemoteInfo | undefined;
  dropped = 0;

  private constructor(
    private readonly front: dgram.Socket,
    private readonly back: dgram.Socket,
    readonly port: number,
    /** Decides, per datagram from the gateway, whether it is lost. */
    public dropFromGateway: (datagram: Buffer, index: number) => boolean,
  ) {}

  static async start(targetPort: number, dropFromGateway: (datagram: Buffer, index: number) => boolean): Promise<LossyUdpProxy> {
    const front = dgram.createSocket('udp4');
    const back = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => back.bind(0, '127.0.0.1', resolve));
    const proxy = new LossyUdpProxy(front, back, front.address().port, dropFromGateway);
    let fromGateway = 0;
    front.on('message', (datagram, rinfo) => {
      proxy.client = rinfo;
      back.send(datagram, targetPort, '127.0.0.1');
    });
    back.on('message', (datagram) => {
      if (proxy.dropFromGateway(datagram, fromGateway++)) {
        proxy.dropped++;
        return;
      }
      if (proxy.client) front.send(datagram, proxy.client.port, proxy.client.address);
    });
    return proxy;
  }

  close(): void {
    this.front.close();
    this.back.close();
  }
}

/** A TCP relay that holds broker→gateway bytes for `delayMs`: a slow or stalled upstream link. */
export class DelayingTcpProxy {
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  delayMs = 0;

  static async start(targetPort: number): Promise<DelayingTcpProxy> {
    let proxy: DelayingTcpProxy | undefined;
    const server = net.createServer((downstream) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      proxy!.sockets.add(downstream).add(upstream);
      downstream.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => {
        const delay = proxy!.delayMs;
        if (delay === 0) downstream.write(chunk);
        else setTimeout(() => downstream.writable && downstream.write(chunk), delay);
      });
      const close = (): void => {
        downstream.destroy();
        upstream.destroy();
      };
      downstream.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new DelayingTcpProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A TCP relay to a broker that can be shut like a gate: while shut, new connections are dropped at once
 * and existing ones are cut. Tests that restart the broker keep the gate shut until their subscriber is
 * back, so the gateway cannot deliver into a broker nobody listens to yet. `delayMs` holds broker→gateway
 * bytes (PUBACKs) back, a slow link.
 */
export class GatedTcpProxy {
  private readonly sockets = new Set<net.Socket>();
  private isOpen = true;
  delayMs = 0;
  /** Holds gateway→broker bytes (publishes) back: what is held when a side closes never arrives. */
  uplinkDelayMs = 0;
  /** Connections accepted and relayed so far. */
  connections = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, options: { open?: boolean } = {}): Promise<GatedTcpProxy> {
    let proxy: GatedTcpProxy | undefined;
    const server = net.createServer((downstream) => {
      const self = proxy!;
      if (!self.isOpen) {
        downstream.destroy();
        return;
      }
      self.connections++;
      const upstream = net.connect(targetPort, '127.0.0.1');
      self.sockets.add(downstream).add(upstream);
      const toBroker = delayedRelay(downstream, upstream, () => self.uplinkDelayMs);
      const toGateway = delayedRelay(upstream, downstream, () => self.delayMs);
      const close = (): void => {
        toBroker.drop();
        toGateway.drop();
        downstream.destroy();
        upstream.destroy();
        self.sockets.delete(downstream);
        self.sockets.delete(upstream);
      };
      downstream.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new GatedTcpProxy(server, (server.address() as net.AddressInfo).port);
    proxy.isOpen = options.open ?? true;
    return proxy;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  open(): void {
    this.isOpen = true;
  }

  /** Refuses new connections and cuts the current ones. */
  shut(): void {
    this.isOpen = false;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.shut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Copies `from` to `to`, holding each chunk for the delay current when it arrived. Held bytes leave in
 * arrival order even when the delay changes meanwhile (a shorter delay must not let later bytes overtake
 * earlier ones and corrupt the MQTT stream): one queue, one timer.
 */
function delayedRelay(from: net.Socket, to: net.Socket, delayMs: () => number): { drop(): void } {
  const held: Array<{ chunk: Buffer; at: number }> = [];
  let timer: NodeJS.Timeout | undefined;
  const release = (): void => {
    timer = undefined;
    const now = Date.now();
    while (held.length > 0 && held[0]!.at <= now) {
      const { chunk } = held.shift()!;
      if (to.writable) to.write(chunk);
    }
    if (held.length > 0) timer = setTimeout(release, held[0]!.at - now);
  };
  from.on('data', (chunk: Buffer) => {
    const delay = delayMs();
    if (delay === 0 && held.length === 0) {
      to.write(chunk);
      return;
    }
    held.push({ chunk, at: Math.max(Date.now() + delay, held.at(-1)?.at ?? 0) });
    timer ??= setTimeout(release, held[0]!.at - Date.now());
  });
  return {
    drop(): void {
      clearTimeout(timer);
      held.length = 0;
    },
  };
}
