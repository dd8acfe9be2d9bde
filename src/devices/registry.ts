import type { DeviceEntry } from '../config/load.js';
import type { Device, PeerCredential } from '../model.js';

/** What a DTLS client certificate means to the registry, given whether its chain verified against dtls.ca. */
export interface PresentedCertificate {
  readonly fingerprint256: string;
  readonly commonName: string | null;
  readonly chainError: string | null;
}

/** What a reload changed, by device name. */
export interface RegistryChange {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Same name, different type or credentials: its sessions must start over with the new ones. */
  readonly changed: readonly string[];
}

/** Credentials → device. Tokens and keys stay in here; everything downstream names devices. */
export class DeviceRegistry {
  private byToken = new Map<string, Device>();
  private byPskIdentity = new Map<string, { readonly device: Device; readonly key: Buffer }>();
  private byFingerprint = new Map<string, Device>();
  private byCommonName = new Map<string, Device>();
  private byName = new Map<string, { readonly device: Device; readonly entry: DeviceEntry }>();

  constructor(entries: readonly DeviceEntry[]) {
    this.replace(entries);
  }

  /**
   * Takes a new device list (a reload). Unchanged devices keep their Device objects, so whatever holds
   * them (observations, queued RPCs, presence upstream) carries on untouched.
   */
  replace(entries: readonly DeviceEntry[]): RegistryChange {
    const previous = this.byName;
    const added: string[] = [];
    const changed: string[] = [];
    this.byToken = new Map();
    this.byPskIdentity = new Map();
    this.byFingerprint = new Map();
    this.byCommonName = new Map();
    this.byName = new Map();
    for (const entry of entries) {
      const before = previous.get(entry.name);
      const same = before !== undefined && sameEntry(before.entry, entry);
      const device: Device = same ? before.device : { name: entry.name, type: entry.type };
      if (!before) added.push(entry.name);
      else if (!same) changed.push(entry.name);
      this.byName.set(entry.name, { device, entry });
      if (entry.token !== undefined) this.byToken.set(entry.token, device);
      if (entry.psk) this.byPskIdentity.set(entry.psk.identity, { device, key: entry.psk.key });
      if (entry.cert && 'fingerprint256' in entry.cert) this.byFingerprint.set(entry.cert.fingerprint256, device);
      if (entry.cert && 'cn' in entry.cert) this.byCommonName.set(entry.cert.cn, device);
    }
    const removed = [...previous.keys()].filter((name) => !this.byName.has(name));
    return { added, removed, changed };
  }

  /** Every registered device's entry (the list a change starts from). */
  entries(): DeviceEntry[] {
    return [...this.byName.values()].map(({ entry }) => entry);
  }

  findByName(name: string): Device | undefined {
    return this.byName.get(name)?.device;
  }

  /** The device's access token, for a source that needs it on the device's behalf (firmware downloads). */
  tokenOf(name: string): string | undefined {
    return this.byName.get(name)?.entry.token;
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

  /** Why a client certificate is refused, or undefined when it belongs to a device. `ca`: the setting that names the CA, for the message. */
  refuseCertificate(certificate: PresentedCertificate, ca = 'dtls.ca'): string | undefined {
    if (this.byFingerprint.has(certificate.fingerprint256)) return undefined;
    if (certificate.chainError !== null) return `does not verify against ${ca} (${certificate.chainError}) and its fingerprint is not pinned by any device`;
    if (certificate.commonName === null || !this.byCommonName.has(certificate.commonName)) {
      return `is signed by ${ca} but its CN ${JSON.stringify(certificate.commonName)} is not registered to any device`;
    }
    return undefined;
  }

  get hasCertificateDevices(): boolean {
    return this.byFingerprint.size + this.byCommonName.size > 0;
  }

  get size(): number {
    return this.byName.size;
  }
}

function sameEntry(a: DeviceEntry, b: DeviceEntry): boolean {
  const cert = (entry: DeviceEntry): string | undefined =>
    entry.cert && ('cn' in entry.cert ? `cn ${entry.cert.cn}` : `sha256 ${entry.cert.fingerprint256}`);
  return (
    a.type === b.type &&
    a.token === b.token &&
    a.psk?.identity === b.psk?.identity &&
    (a.psk === undefined || b.psk === undefined ? a.psk === b.psk : a.psk.key.equals(b.psk.key)) &&
    cert(a) === cert(b)
  );
}
