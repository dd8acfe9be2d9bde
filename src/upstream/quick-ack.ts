// Immediate TCP ACKs on the broker connection. A broker that keeps Nagle's algorithm on (mosquitto's
// default; a TCP proxy in between does the same) holds each PUBACK until its previous one is acknowledged
// at the TCP level, and Linux delays that ACK (40 ms at least) unless the gateway has data to send that
// carries it. Under load every PUBACK then waits for the gateway's next publish: p50 1.5 ms instead of
// 0.4 ms at 2,000 readings/s, and a lone pair of publishes waits the full 40 ms for its second PUBACK.
// Node cannot ask for the ACK (no TCP_QUICKACK), so a tiny native function does (native/tcp_quickack.c,
// libc only). Linux returns to delayed ACKs after each exchange, hence one call after each read.
import { loadNativeAddon } from '../native-addon.js';

export interface QuickAckBinding {
  /** setsockopt(TCP_QUICKACK): 0, an errno, or -1 where the platform has none. */
  quickAck(fd: number): number;
}

/** Loads build/Release/tcp_quickack.node (built with the DTLS binding at npm install) once. */
export function loadQuickAckBinding(): QuickAckBinding {
  return loadNativeAddon<QuickAckBinding>('tcp_quickack', {
    missing: (file, root) => `${file} is missing: run "npm rebuild" in ${root} (it needs python3, make and g++)`,
    unloadable: (file, reason) => `cannot load ${file}: ${reason}; rebuild it with "npm rebuild"`,
  });
}

/** Node's socket internals, read only for the descriptor: `_handle` is the TCP handle, or TLS's wrap of one. */
interface SocketInternals {
  readonly _handle?: { readonly fd?: unknown; readonly _parent?: { readonly fd?: unknown } } | null;
}

/** The TCP socket's file descriptor under a net or TLS socket; undefined for anything else (WebSockets). */
export function tcpDescriptor(stream: unknown): number | undefined {
  const handle = (stream as SocketInternals | null | undefined)?._handle;
  const fd = typeof handle?.fd === 'number' && handle.fd >= 0 ? handle.fd : handle?._parent?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * A function that acknowledges at once what `stream` has received, or undefined when it cannot: not a TCP
 * socket, no binding, or a first call that failed (`why` says why, once).
 */
export function quickAcker(stream: unknown, binding: () => QuickAckBinding, why: (reason: string) => void): (() => void) | undefined {
  const fd = tcpDescriptor(stream);
  if (fd === undefined) return undefined;
  let quickAck: QuickAckBinding['quickAck'];
  try {
    quickAck = binding().quickAck;
  } catch (error) {
    why((error as Error).message);
    return undefined;
  }
  const first = quickAck(fd);
  if (first !== 0) {
    why(first === -1 ? 'this platform has no TCP_QUICKACK' : `setsockopt(TCP_QUICKACK) failed with errno ${first}`);
    return undefined;
  }
  return () => void quickAck(fd);
}
