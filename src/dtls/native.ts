// The native DTLS engine (native/dtls.c) and its types. It holds OpenSSL state only; sockets, timers,
// session tables and every decision about who may connect live in TypeScript.
import { loadNativeAddon } from '../native-addon.js';

declare const contextBrand: unique symbol;
declare const sessionBrand: unique symbol;
/** An SSL_CTX with its callbacks; freed when garbage-collected. */
export type NativeContext = { readonly [contextBrand]: true };
/** One SSL object; free() it when the session ends. */
export type NativeSession = { readonly [sessionBrand]: true };

export interface ContextOptions {
  /** PEM: the server certificate, then any intermediates. */
  readonly cert?: string;
  readonly key?: string;
  /** PEM: the CAs client certificates are verified against. */
  readonly ca?: string;
  /** OpenSSL cipher list, in the server's order of preference. */
  readonly ciphers: string;
  readonly securityLevel: number;
  /** Largest datagram the engine produces. */
  readonly mtu: number;
  readonly requestClientCert?: boolean;
  readonly requireClientCert?: boolean;
  readonly tickets?: boolean;
  /** Client role, for the binding's own tests and the benchmark's load generator. */
  readonly client?: boolean;
}

export interface CertificateInfo {
  /** RFC 2253 form, e.g. "CN=sensor-7,O=Plant 3". */
  readonly subject: string;
  readonly commonName: string | null;
  /** SHA-256 of the DER certificate, lowercase hex without separators. */
  readonly fingerprint256: string;
}

export interface PresentedCertificate extends CertificateInfo {
  /** Why the chain did not verify against the configured CAs ("self signed certificate", ...), or null. */
  readonly chainError: string | null;
}

/** Synchronous: OpenSSL asks in the middle of a handshake. undefined refuses the identity. */
export type PskLookup = (identity: string, peerKey: string) => Buffer | undefined;
export type CertificateCheck = (certificate: PresentedCertificate, peerKey: string) => boolean;

export interface FeedOutcome {
  /** To send to the peer, each one datagram. */
  readonly datagrams: Buffer[];
  /** Decrypted application datagrams. */
  readonly data: Buffer[];
  /** The handshake completed during this call. */
  readonly handshakeDone: boolean;
  /** The peer sent close_notify (already answered). */
  readonly closed: boolean;
  /** Fatal: OpenSSL's reason ("no shared cipher", ...); the session cannot be used any more. */
  readonly error: string | null;
  readonly identityRefused: boolean;
  readonly certificateRefused: boolean;
}

export interface SessionInfo {
  readonly version: string;
  readonly cipher: string | null;
  readonly pskIdentity: string | null;
  readonly certificate: CertificateInfo | null;
  readonly resumed: boolean;
  /** Largest plaintext one record (and so one datagram) carries at the configured MTU. */
  readonly dataMtu: number;
}

export interface DtlsBinding {
  readonly openSslVersion: string;
  createContext(options: ContextOptions, psk: PskLookup, verify: CertificateCheck): NativeContext;
  rotateCookieSecret(context: NativeContext): void;
  listen(context: NativeContext, datagram: Buffer, peerKey: string): { datagrams: Buffer[]; session: NativeSession | null };
  /** Client role; the PSK is per session, so one context serves many simulated devices. */
  connect(context: NativeContext, peerKey: string, pskIdentity?: string, pskKey?: Buffer): NativeSession;
  feed(session: NativeSession, datagram: Buffer | null): FeedOutcome;
  write(session: NativeSession, plaintext: Buffer): Buffer[];
  /** ms until a handshake retransmission is due, or -1. */
  timeout(session: NativeSession): number;
  handleTimeout(session: NativeSession): FeedOutcome;
  shutdown(session: NativeSession): Buffer[];
  info(session: NativeSession): SessionInfo;
  free(session: NativeSession): void;
  /** glibc: hands memory freed meanwhile back to the system (malloc_trim); true if any went. */
  releaseFreedMemory(): boolean;
}

/** The binding could not be loaded; the message says how to build it. */
export class DtlsBindingError extends Error {}

/** Loads build/Release/coap2mqtt_dtls.node once. */
export function loadDtlsBinding(): DtlsBinding {
  return loadNativeAddon<DtlsBinding>(
    'coap2mqtt_dtls',
    {
      missing: (file, root) =>
        `the DTLS binding is not built (${file} is missing): run "npm rebuild" in ${root}; it needs python3, make and g++, ` +
        'and libssl-dev when Node.js uses the system OpenSSL (Debian and Raspberry Pi OS packages)',
      unloadable: (file, reason) => `cannot load the DTLS binding ${file}: ${reason}; rebuild it with "npm rebuild"`,
    },
    (message) => new DtlsBindingError(message),
  );
}

/** Epoch-0 DTLS ClientHello (RFC 6347 §4.1, §4.2.2): the only datagram worth OpenSSL's time from a stranger. */
export function isClientHello(datagram: Buffer): boolean {
  return (
    datagram.length >= 25 &&
    datagram[0] === 22 && // handshake record
    datagram[1] === 0xfe && // DTLS 1.x
    datagram[3] === 0 &&
    datagram[4] === 0 && // epoch 0
    datagram[13] === 1 // client_hello
  );
}

/**
 * The 32-byte client random of an unfragmented ClientHello (after the 13-byte record header, the 12-byte
 * handshake header and the 2-byte version), or undefined. A retransmission repeats it; a new handshake
 * (a restarted client) has a new one.
 */
export function clientHelloRandom(datagram: Buffer): Buffer | undefined {
  const fragmentOffset = datagram.readUIntBE(19, 3);
  return fragmentOffset === 0 && datagram.length >= 59 ? datagram.subarray(27, 59) : undefined;
}
