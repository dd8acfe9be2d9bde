// TCP clients that open a connection and then stall, as a flood would: sending nothing, dribbling a
// request head one byte at a time (slowloris), or sending a whole head and holding back the body.
import net from 'node:net';

export type Stall =
  | { readonly kind: 'silent' }
  /** One byte of a never-ending request head every `everyMs`. */
  | { readonly kind: 'dribble'; readonly everyMs: number }
  /** These bytes at once, then nothing (a request head announcing a body that never comes). */
  | { readonly kind: 'head'; readonly bytes: string };

export class HeldConnections {
  private readonly sockets: net.Socket[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closedCount = 0;

  private constructor() {}

  /** Opens `count` connections one after another, each stalling as told; resolves once all have connected. */
  static async open(port: number, host: string, count: number, stall: Stall, localAddress?: string): Promise<HeldConnections> {
    const held = new HeldConnections();
    for (let i = 0; i < count; i++) await held.openOne(port, host, stall, localAddress);
    return held;
  }

  /** Connections the server (or the network) has closed so far. */
  get closed(): number {
    return this.closedCount;
  }

  get open(): number {
    return this.sockets.length - this.closedCount;
  }

  close(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers.clear();
    for (const socket of this.sockets) socket.destroy();
  }

  private openOne(port: number, host: string, stall: Stall, localAddress: string | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
      this.sockets.push(socket);
      let dribbling: NodeJS.Timeout | undefined;
      socket.on('data', () => {});
      socket.once('close', () => {
        this.closedCount++;
        if (dribbling) this.forget(dribbling);
      });
      // A reset from the server is what some tests look for, not a failure of the client.
      socket.on('error', () => {});
      socket.once('connect', () => {
        if (stall.kind === 'head') socket.write(stall.bytes);
        if (stall.kind === 'dribble') {
          const head = `POST /api/v1/slow-token/telemetry HTTP/1.1\r\nHost: gateway\r\nX-Padding: ${'a'.repeat(10_000)}`;
          let at = 0;
          dribbling = setInterval(() => socket.write(head[at++ % head.length]!), stall.everyMs);
          this.timers.add(dribbling);
        }
        resolve();
      });
      socket.once('error', (error) => {
        if (socket.connecting) reject(error);
      });
    });
  }

  private forget(timer: NodeJS.Timeout): void {
    clearInterval(timer);
    this.timers.delete(timer);
  }
}
