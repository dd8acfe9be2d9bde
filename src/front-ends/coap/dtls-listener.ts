// The DTLS listener of the CoAP front end, with the device registry deciding who may connect. Key material
// is read here so a missing or unreadable file is named by its config key; OpenSSL's own complaints ("key
// values mismatch") likewise. A reload reads it again (src/ops/reload.ts).
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { DtlsTransport } from '../../coap/dtls-transport.js';
import type { DatagramSink } from '../../coap/transport.js';
import type { DtlsConfig } from '../../config/load.js';
import type { DeviceRegistry } from '../../devices/registry.js';
import { DtlsBindingError } from '../../dtls/native.js';
import type { DtlsPolicy } from '../../dtls/server.js';
import { ConfigurationError, StartupError } from '../../startup-error.js';

/** The PEM texts of dtls.cert, key and ca, and whether handshakes ask for a client certificate. */
export interface DtlsMaterial {
  readonly cert: string | undefined;
  readonly key: string | undefined;
  readonly ca: string | undefined;
  readonly requestClientCert: boolean;
}

export interface DtlsListenerOptions {
  readonly config: DtlsConfig;
  readonly host: string;
  readonly socketBufferBytes: number;
  readonly registry: DeviceRegistry;
  readonly sink: DatagramSink;
  readonly log: Logger;
}

export function createDtlsListener(options: DtlsListenerOptions): { readonly transport: DtlsTransport; readonly material: DtlsMaterial } {
  const { config, registry } = options;
  const material = readDtlsMaterial(config, registry);
  const policy: DtlsPolicy = {
    pskKey: (identity) => registry.pskKey(identity),
    checkCertificate: (certificate) => {
      const reason = registry.refuseCertificate(certificate);
      return reason === undefined ? { accepted: true } : { accepted: false, reason };
    },
  };
  try {
    const transport = new DtlsTransport(
      { ...config, host: options.host, socketBufferBytes: options.socketBufferBytes, ...material },
      policy,
      options.sink,
      options.log,
    );
    return { transport, material };
  } catch (error) {
    if (error instanceof DtlsBindingError) throw new StartupError(error.message);
    const message = describeDtlsError(error as Error, config);
    // "dtls.<key> ...": OpenSSL named the setting it refused.
    throw message.startsWith('dtls.') ? new ConfigurationError(message) : new StartupError(message);
  }
}

/** Read here, so a missing or unreadable file is named by its config key. */
export function readDtlsMaterial(config: DtlsConfig, registry: Pick<DeviceRegistry, 'hasCertificateDevices'>): DtlsMaterial {
  const read = (key: 'cert' | 'key' | 'ca'): string | undefined => {
    const path = config[key];
    if (path === '') return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      throw new StartupError(`dtls.${key}: cannot read "${path}": ${(error as Error).message}`);
    }
  };
  const material = { cert: read('cert'), key: read('key'), ca: read('ca') };
  // Asked for whenever a device could present one; PSK handshakes never include the request.
  const requestClientCert = material.ca !== undefined || registry.hasCertificateDevices || config.requireClientCert;
  return { ...material, requestClientCert };
}

export function sameMaterial(a: DtlsMaterial, b: DtlsMaterial): boolean {
  return a.cert === b.cert && a.key === b.key && a.ca === b.ca && a.requestClientCert === b.requestClientCert;
}

/** The binding names the material that failed: "cert: ...", "key: key values mismatch", "ciphers: ...". */
export function describeDtlsError(error: Error, config: DtlsConfig): string {
  const [what, ...reason] = error.message.split(': ');
  const key = what as keyof DtlsConfig;
  if (reason.length > 0 && key in config) {
    const value = key === 'ciphers' ? config.ciphers : `"${String(config[key])}"`;
    return `dtls.${key} ${value}: ${reason.join(': ')}`;
  }
  return `cannot start DTLS: ${error.message}`;
}
