// Devices that join by provisioning: registered at once (hot, so the next request with the new token
// works) and written to the devices file, where the technician sees them (`coap2mqtt devices list`) and a
// restart or reload finds them. A failed write (full disk, read-only file) loses nothing: the device stays
// registered and the write is retried until it lands.
import type { Logger } from 'pino';
import type { DeviceEntry } from '../config/load.js';
import type { Device } from '../model.js';
import { entryName, readDevicesFileEntries, writeDevicesFile } from './devices-file.js';
import type { DeviceRegistry, RegistryChange } from './registry.js';

/** How a device was provisioned, recorded in its devices-file entry. */
export interface ProvisionRecord {
  readonly via: 'upstream' | 'local';
  /** The provision key it presented (not the secret): in local mode a repeated request gets the same token. */
  readonly key: string;
  readonly at: string;
}

const RETRY_MS = 30_000;

export class DeviceEnrolment {
  /** Registered but not yet in the devices file, by name. */
  private readonly unsaved = new Map<string, Record<string, unknown>>();
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly devicesFile: string,
    private readonly registry: DeviceRegistry,
    /** Told of each registry change, so observations of a device whose token changed end. */
    private readonly onChange: (change: RegistryChange) => void,
    private readonly log: Logger,
  ) {}

  /**
   * Why a device named `name` with `token` cannot be registered, or undefined. A device from the
   * configuration file itself is the technician's; provisioning does not overwrite it.
   */
  conflict(name: string, token: string | undefined): string | undefined {
    if (this.registry.findByName(name) && !this.unsaved.has(name) && !this.inFile(name)) {
      return `a device named "${name}" is configured in the gateway's configuration file`;
    }
    const holder = token === undefined ? undefined : this.registry.findByToken(token);
    if (holder && holder.name !== name) return 'that token belongs to another device on this gateway';
    return undefined;
  }

  /** The token and provision record of a device provisioned before, if it was. */
  provisioned(name: string): { readonly token: string | undefined; readonly record: ProvisionRecord | undefined } | undefined {
    const raw = this.unsaved.get(name) ?? this.fileEntry(name);
    if (!raw) return undefined;
    const record = raw.provisioned as ProvisionRecord | undefined;
    return { token: typeof raw.token === 'string' ? raw.token : undefined, record: record && typeof record.key === 'string' ? record : undefined };
  }

  /** Registers the device now and writes it to the devices file (replacing an entry of the same name). */
  enrol(name: string, type: string, token: string, record: ProvisionRecord): { readonly device: Device; readonly persisted: boolean } {
    const raw = { name, type, token, provisioned: record };
    const entry: DeviceEntry = { name, type, token, psk: undefined, cert: undefined };
    const change = this.registry.replace([...this.registry.entries().filter((existing) => existing.name !== name), entry]);
    this.onChange(change);
    this.unsaved.set(name, raw);
    const persisted = this.flush();
    return { device: this.registry.findByName(name)!, persisted };
  }

  /** After a reload replaced the registry from the files: devices not yet written are registered again. */
  reapplyUnsaved(): void {
    if (this.unsaved.size === 0) return;
    const pending = [...this.unsaved.values()].map((raw) => ({ name: raw.name, type: raw.type, token: raw.token, psk: undefined, cert: undefined }) as DeviceEntry);
    const names = new Set(pending.map((entry) => entry.name));
    this.onChange(this.registry.replace([...this.registry.entries().filter((entry) => !names.has(entry.name)), ...pending]));
  }

  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.unsaved.size > 0) this.flush();
  }

  /** Writes every unsaved device; true when the file now holds them all. */
  private flush(): boolean {
    try {
      const names = new Set(this.unsaved.keys());
      const entries = readDevicesFileEntries(this.devicesFile).filter((entry) => !names.has(entryName(entry) as string));
      const backup = writeDevicesFile(this.devicesFile, [...entries, ...this.unsaved.values()]);
      if (backup !== undefined) this.log.info({ file: this.devicesFile, backup }, 'devices file rewritten as JSON; the hand-edited version is kept as a backup');
      this.log.info({ file: this.devicesFile, devices: [...names] }, 'provisioned devices written to the devices file');
      this.unsaved.clear();
      return true;
    } catch (error) {
      this.log.error(
        { file: this.devicesFile, devices: [...this.unsaved.keys()], reason: (error as Error).message, retryInSeconds: RETRY_MS / 1000 },
        'cannot write provisioned devices to the devices file; they are registered until a restart, and the write is retried',
      );
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined;
        if (this.unsaved.size > 0) this.flush();
      }, RETRY_MS);
      this.retryTimer.unref();
      return false;
    }
  }

  private inFile(name: string): boolean {
    return this.fileEntry(name) !== undefined;
  }

  private fileEntry(name: string): Record<string, unknown> | undefined {
    try {
      return readDevicesFileEntries(this.devicesFile).find((entry) => entryName(entry) === name) as Record<string, unknown> | undefined;
    } catch {
      return undefined;
    }
  }
}
