// What a technician can do when a listening socket cannot be opened. The gateway's start (CoAP, DTLS, the
// health and metrics endpoint, the HTTP device API) and doctor meet the same few answers of the kernel;
// here each is named once, and worded once.

/** The kernel's answer to bind()/listen(), as far as a technician can act on it. */
export type ListenFailure = 'in-use' | 'not-allowed' | 'not-local' | 'unknown-host' | 'other';

export function listenFailure(error: NodeJS.ErrnoException): ListenFailure {
  switch (error.code) {
    case 'EADDRINUSE':
      return 'in-use';
    case 'EACCES':
      return 'not-allowed';
    case 'EADDRNOTAVAIL':
      return 'not-local';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'unknown-host';
    default:
      return 'other';
  }
}

/** "::" on a kernel with IPv6 switched off: the listener takes 0.0.0.0 (IPv4 only) instead. */
export function ipv6Unavailable(host: string, error: NodeJS.ErrnoException | undefined): boolean {
  return host === '::' && (error?.code === 'EAFNOSUPPORT' || error?.code === 'EADDRNOTAVAIL');
}

/** Why a port below 1024 is refused to a user other than root. */
export const PRIVILEGED_PORTS = 'ports below 1024 need CAP_NET_BIND_SERVICE';

export const notLocalAddress = (hostKey: string, host: string): string => `${hostKey} "${host}" is not an address of this machine`;

/** The command that names the program holding a port. */
export const portHolderCommand = (transport: 'UDP' | 'TCP', port: number): string =>
  `sudo ss -${transport === 'UDP' ? 'u' : 't'}lpn 'sport = :${port}'`;

/** One listener of the gateway, in the words and keys a technician finds in the configuration. */
export interface Listener {
  readonly transport: 'UDP' | 'TCP';
  readonly host: string;
  readonly port: number;
  readonly hostKey: string;
  readonly portKey: string;
  /** As the port is named: "CoAP port", "the health and metrics port". */
  readonly portName: string;
  /** What it listens for: "CoAP", "health and metrics". */
  readonly purpose: string;
  /** Who usually holds its port already: "another coap2mqtt or CoAP server?". */
  readonly usualHolders: string;
  /** A way out besides changing the port: "set http.enabled to false". */
  readonly otherWayOut?: string;
}

/** What a technician can do about a listener that could not start, in one sentence naming the key to change. */
export function listenErrorAdvice(error: NodeJS.ErrnoException, listener: Listener): string {
  const { host, port, hostKey, portKey } = listener;
  switch (listenFailure(error)) {
    case 'in-use': {
      const ways = listener.otherWayOut ? `stop it, change ${portKey}, or ${listener.otherWayOut}` : `stop it or change ${portKey}`;
      return `${listener.portName} ${port} on ${host} is already in use (${listener.usualHolders}); ${ways}`;
    }
    case 'not-allowed':
      return `not allowed to listen on ${listener.transport} port ${port} (${portKey}); ${PRIVILEGED_PORTS}`;
    case 'not-local':
      return notLocalAddress(hostKey, host);
    case 'unknown-host':
      return `${hostKey} "${host}" is not an address or a known host name`;
    case 'other':
      return `cannot listen for ${listener.purpose} on ${host}:${port} (${hostKey}, ${portKey}): ${error.message}`;
  }
}
