// What the gateway knows of each device's attributes: the shared ones ThingsBoard pushed or answered, and
// the client ones the device reported. ThingsBoard offers no "give me all shared attributes" request and
// does not replay pushes missed while a device was disconnected, so this cache is the only source of a new
// observer's initial state. It is kept in one JSON file under state.dir, written atomically shortly after a
// change, so it survives restarts and power cuts.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import type { Logger } from 'pino';
import { encodeJson, keyedRecord } from '../json-safety.js';
import type { AttributeSet, AttributeUpdate, JsonValue } from '../model.js';
import { parseJsonText } from '../payload/json-text.js';

/** Keyed records without prototype: an attribute named "__proto__" is an attribute like any other. */
interface DeviceAttributes {
  shared: Record<string, JsonValue>;
  client: Record<string, JsonValue>;
}

const deviceAttributes = (shared: object = {}, client: object = {}): DeviceAttributes => ({
  shared: Object.assign(keyedRecord<JsonValue>(), shared),
  client: Object.assign(keyedRecord<JsonValue>(), client),
});

interface FileFormat {
  readonly version: 1;
  readonly devices: Record<string, DeviceAttributes>;
}

const WRITE_DELAY_MS = 1000;

// The file is rewritten only when something really changed: keep-alive answers repeat what is known, and
// an SD card should not be rewritten every few seconds for nothing.
function setAll(target: Record<string, JsonValue>, values: AttributeSet): boolean {
  let changed = false;
  for (const [key, value] of Object.entries(values)) {
    if (Object.hasOwn(target, key) && encodeJson(target[key]) === encodeJson(value)) continue;
    target[key] = value;
    changed = true;
  }
  return changed;
}

function remove(target: Record<string, JsonValue>, key: string): boolean {
  if (!Object.hasOwn(target, key)) return false;
  delete target[key];
  return true;
}
const RETRY_DELAY_MS = 30_000;

export class AttributeStore {
  private readonly devices = new Map<string, DeviceAttributes>();
  private writeTimer: NodeJS.Timeout | undefined;
  private writeFailing = false;

  private constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {}

  /** Loads the file if there is one. A damaged file is set aside (renamed) rather than trusted or lost. */
  static open(file: string, log: Logger): AttributeStore {
    const store = new AttributeStore(file, log);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return store;
    }
    try {
      const parsed = parseJsonText(text) as FileFormat;
      if (parsed.version !== 1 || typeof parsed.devices !== 'object' || parsed.devices === null) throw new Error('unknown format');
      for (const [name, entry] of Object.entries(parsed.devices)) {
        store.devices.set(name, deviceAttributes(entry.shared, entry.client));
      }
      log.info({ file, devices: store.devices.size }, 'attribute cache loaded');
    } catch (error) {
      const aside = `${file}.damaged-${Date.now()}`;
      renameSync(file, aside);
      log.warn({ file, movedTo: aside, reason: (error as Error).message }, 'attribute cache file unreadable; set aside, starting with an empty cache');
    }
    return store;
  }

  shared(deviceName: string): AttributeSet {
    return this.devices.get(deviceName)?.shared ?? {};
  }

  client(deviceName: string): AttributeSet {
    return this.devices.get(deviceName)?.client ?? {};
  }

  /** A push: changed keys are set, deleted keys removed. */
  applySharedUpdate(deviceName: string, update: AttributeUpdate): void {
    const shared = this.entry(deviceName).shared;
    let changed = setAll(shared, update.changed);
    for (const key of update.deleted) changed = remove(shared, key) || changed;
    if (changed) this.changed();
  }

  /** An answer to a request: what was asked and found. Keys asked but not found no longer exist upstream. */
  mergeAnswer(deviceName: string, scope: 'shared' | 'client', asked: readonly string[], found: AttributeSet): void {
    const target = this.entry(deviceName)[scope];
    let changed = false;
    for (const key of asked) {
      changed = (Object.hasOwn(found, key) ? setAll(target, { [key]: found[key]! }) : remove(target, key)) || changed;
    }
    if (changed) this.changed();
  }

  /** Client attributes the device reported and ThingsBoard accepted. */
  mergeClient(deviceName: string, attributes: AttributeSet): void {
    if (setAll(this.entry(deviceName).client, attributes)) this.changed();
  }

  /** Writes pending changes now (on shutdown). */
  close(): void {
    if (this.writeTimer) {
      clearTimeout(this.writeTimer);
      this.writeTimer = undefined;
      this.write();
    }
  }

  private entry(deviceName: string): DeviceAttributes {
    let entry = this.devices.get(deviceName);
    if (!entry) {
      entry = deviceAttributes();
      this.devices.set(deviceName, entry);
    }
    return entry;
  }

  private changed(): void {
    this.writeTimer ??= setTimeout(() => {
      this.writeTimer = undefined;
      this.write();
    }, WRITE_DELAY_MS);
  }

  /** Write to a temporary file, flush it to disk, then rename over the old one: never a half-written cache. */
  private write(): void {
    const temporary = `${this.file}.tmp`;
    try {
      const text = this.serialize();
      const fd = openSync(temporary, 'w');
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, this.file);
      if (this.writeFailing) this.log.info({ file: this.file }, 'attribute cache written again');
      this.writeFailing = false;
    } catch (error) {
      // Disk full or read-only: the cache stays in memory and the previous file stays intact.
      if (!this.writeFailing) {
        this.log.warn({ file: this.file, reason: (error as Error).message }, 'cannot write the attribute cache; keeping it in memory and retrying on the next change');
      }
      this.writeFailing = true;
      this.writeTimer ??= setTimeout(() => {
        this.writeTimer = undefined;
        this.write();
      }, RETRY_DELAY_MS);
    }
  }

  /**
   * The file's text, one device at a time: a device whose attributes cannot be encoded (nothing should get
   * here unbounded, but if it did) loses its entry, logged, and the others are written all the same.
   */
  private serialize(): string {
    const parts: string[] = [];
    for (const [name, entry] of this.devices) {
      const text = encodeJson(entry);
      if (text === undefined) {
        this.devices.delete(name);
        this.log.error({ device: name }, 'attribute cache entry could not be encoded; forgotten so the others are still written');
        continue;
      }
      parts.push(`${JSON.stringify(name)}:${text}`);
    }
    return `{"version":1,"devices":{${parts.join(',')}}}`;
  }
}
