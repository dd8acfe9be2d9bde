import type { DeviceEntry } from '../config/load.js';
import type { Device } from '../model.js';

/** Credentials → device. Tokens stay in here; everything downstream names devices. */
export class DeviceRegistry {
  private readonly byToken: ReadonlyMap<string, Device>;

  constructor(entries: readonly DeviceEntry[]) {
    this.byToken = new Map(entries.map((entry) => [entry.token, { name: entry.name, type: entry.type }]));
  }

  findByToken(token: string): Device | undefined {
    return this.byToken.get(token);
  }

  get size(): number {
    return this.byToken.size;
  }
}
