import type { DeviceEntry } from '../config/load.js';
import type { Device, PeerCredential } from '../model.js';

/** What a DTLS client certificate means to the registry, given whether its chain verified against dtls.ca. */
export interface PresentedCertificate {
  readonly fingerprint256: string;
  readonly commonName: string | null;
  readonly chainError: string | null;
}

/** Credentials → device. Tokens and keys stay in here; everything downstream names devices. */
export class DeviceRegistry {
  private readonly byToken = new Map<string, Device>();
  private readonly byPskIdentity = new Map<string, { readonly device: Device; readonly key: Buffer }>();
  private readonly byFingerprint = new Map<string, Device>();
  private readonly byCommonName = new Map<string, Device>();

  private readonly count: number;

  constructor(entries: readonly DeviceEntry[]) {
    this.count = entries.length;
    for (const entry of entries) {
      const device: Device = { name: entry.name, type: entry.type };
      if (entry.token !== undefined) this.byToken.set(entry.token, device);
      if (entry.psk) this.byPskIdentity.set(entry.psk.identity, { device, key: entry.psk.key });
      if (entry.cert && 'fingerprint256' in entry.cert) this.byFingerprint.set(entry.cert.fingerprint256, device);
      if (entry.cert && 'cn' in entry.cert) this.byCommonName.set(entry.cert.cn, device);
    }
  }

  findByToken(token: string): Device | undefined {
    return this.byToken.get(token);
  }

  /** The device a DTLS session authenticated as; undefined when it is no longer registered. */
  findByCredential(credential: PeerCredential): Device | undefined {
    if (credential.kind === 'psk') return this.byPskIdentity.get(credential.identity)?.device;
    // A pinned certificate first: it was accepted for its fingerprint whatever its CN says.
    return (
      this.byFingerprint.get(credential.fingerprint256) ??
      (credential.commonName !== undefined ? this.byCommonName.get(credential.commonName) : undefined)
    );
  }

  pskKey(identity: string): Buffer | undefined {
    return this.byPskIdentity.get(identity)?.key;
  }

  /** Why a client certificate is refused, or undefined when it belongs to a device. */
  refuseCertificate(certificate: PresentedCertificate): string | undefined {
    if (this.byFingerprint.has(certificate.fingerprint256)) return undefined;
    if (certificate.chainError !== null) return `does not verify against dtls.ca (${certificate.chainError}) and its fingerprint is not pinned by any device`;
    if (certificate.commonName === null || !this.byCommonName.has(certificate.commonName)) {
      return `is signed by dtls.ca but its CN ${JSON.stringify(certificate.commonName)} is not registered to any device`;
    }
    return undefined;
  }

  get hasCertificateDevices(): boolean {
    return this.byFingerprint.size + this.byCommonName.size > 0;
  }

  get size(): number {
    return this.count;
  }
}
