// Package images, fetched once for every device they are assigned to and never served unverified.
// A device's block-wise download asks for the image once per block: those asks are answered from memory;
// the verified image is also kept on disk (atomically written, checked again when read) so a restart or
// a fleet updating over hours does not download it again. Failures are remembered for a while, so a
// fleet asking every few seconds does not hammer a source that is down or an image that is wrong.
import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { FirmwareConfig } from '../config/load.js';
import { createDirectories } from '../config/paths.js';
import { fingerprint, redactUrl } from '../log.js';
import { describePackage, packageKey, type PackageAssignment } from './assignment.js';
import { CHECKSUM_ALGORITHMS, checksumMatches, parseChecksumAlgorithm, type ChecksumAlgorithm } from './checksum.js';

/** firmware.* with cacheDir resolved (never empty). */
export type FirmwareStoreOptions = FirmwareConfig;

export interface FirmwareImage {
  readonly data: Buffer;
  /** 8 bytes naming these exact bytes: the CoAP ETag of every block. */
  readonly etag: Buffer;
  readonly key: string;
}

export type ImageOutcome =
  | { readonly status: 'ready'; readonly image: FirmwareImage }
  /** Not now: every source that applies failed or has no such image yet. */
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number }
  /** The package cannot be served as assigned: wrong checksum or size, too large, no way to verify it. */
  | { readonly status: 'refused'; readonly reason: string };

/**
 * Bytes [chunk × size, chunk × size + size) of the image, as ThingsBoard's transports serve `size` and
 * `chunk`; the whole image when size is 0. A slice is a representation of its own, with its own ETag.
 */
export function imageSlice(image: FirmwareImage, size: number, chunk: number): { readonly data: Buffer; readonly etag: Buffer } {
  if (size <= 0) return { data: image.data, etag: image.etag };
  const start = Math.min(chunk * size, image.data.length);
  const end = Math.min(start + size, image.data.length);
  const etag = createHash('sha256').update(image.etag).update(`${start}-${end}`).digest().subarray(0, image.etag.length);
  return { data: image.data.subarray(start, end), etag };
}

/** Who asks: the "thingsboard" source downloads with the device's own access token. */
export interface ImageRequester {
  readonly token: string | undefined;
  readonly deviceName: string;
}

export interface FirmwareStoreStats {
  /** Images downloaded (or read from firmware.dir) and verified. */
  readonly fetches: number;
  /** Downloads that failed: unreachable, HTTP errors, timeouts. */
  readonly fetchFailures: number;
  /** Packages refused: checksum or size mismatch, too large, unverifiable. */
  readonly refused: number;
  readonly memoryImages: number;
  readonly memoryBytes: number;
}

type Attempt =
  | { readonly kind: 'data'; readonly data: Buffer; readonly from: string }
  /** The source does not apply to this package (no fw_url, no firmware.dir, ...). */
  | { readonly kind: 'skipped' }
  /** The source answered that it has no such image. */
  | { readonly kind: 'missing'; readonly reason: string }
  | { readonly kind: 'failed'; readonly reason: string }
  | { readonly kind: 'too-large'; readonly reason: string };

type Verifier = { readonly algorithm: ChecksumAlgorithm; readonly checksum: string } | null;

/** How long a package that cannot be had is answered from memory before its sources are tried again. */
const RETRY_UNAVAILABLE_MS = 30_000;
/** A refused image (wrong checksum, too large) is only tried again after this, or when the assignment changes. */
const RETRY_REFUSED_MS = 5 * 60_000;
/** Images kept in memory for devices downloading them, beyond one image of firmware.maxImageBytes. */
const MEMORY_BUDGET_BYTES = 64 * 1024 * 1024;
const MEMORY_IDLE_MS = 10 * 60_000;
const MAX_REMEMBERED_FAILURES = 1000;

export class FirmwareImageStore {
  private readonly memory: LRUCache<string, FirmwareImage>;
  private readonly inFlight = new Map<string, Promise<ImageOutcome>>();
  private readonly failures = new Map<string, { readonly outcome: Exclude<ImageOutcome, { status: 'ready' }>; readonly until: number }>();
  private readonly stopping = new AbortController();
  private counts = { fetches: 0, fetchFailures: 0, refused: 0 };

  constructor(
    private readonly options: FirmwareStoreOptions,
    private readonly log: Logger,
    private readonly fetchImpl: typeof fetch = fetch,
    private readonly now: () => number = Date.now,
  ) {
    this.memory = new LRUCache<string, FirmwareImage>({
      maxSize: Math.max(MEMORY_BUDGET_BYTES, options.maxImageBytes),
      sizeCalculation: (image) => Math.max(1, image.data.length),
      ttl: MEMORY_IDLE_MS,
      updateAgeOnGet: true,
    });
  }

  /** The verified image of `assignment` if it is in memory: the path every block after the first takes. */
  cached(assignment: PackageAssignment): FirmwareImage | undefined {
    return this.memory.get(packageKey(assignment));
  }

  /** The verified image of `assignment`. Never rejects; asks at the same time share one fetch. */
  get(assignment: PackageAssignment, requester: ImageRequester): Promise<ImageOutcome> {
    const key = packageKey(assignment);
    const image = this.memory.get(key);
    if (image) return Promise.resolve({ status: 'ready', image });
    const failed = this.failures.get(key);
    if (failed && failed.until > this.now()) {
      const outcome = failed.outcome;
      return Promise.resolve(
        outcome.status === 'unavailable' ? { ...outcome, retryAfterSeconds: Math.max(1, Math.ceil((failed.until - this.now()) / 1000)) } : outcome,
      );
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.load(key, assignment, requester)
        .catch((error: unknown): ImageOutcome => {
          this.log.error({ err: error, package: describePackage(assignment) }, 'package image could not be loaded');
          return { status: 'unavailable', reason: 'the gateway failed to load the image; see its log', retryAfterSeconds: RETRY_UNAVAILABLE_MS / 1000 };
        })
        .then((outcome) => {
          this.inFlight.delete(key);
          this.remember(key, outcome);
          return outcome;
        });
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  stats(): FirmwareStoreStats {
    return { ...this.counts, memoryImages: this.memory.size, memoryBytes: this.memory.calculatedSize };
  }

  /** Aborts downloads in progress (their askers hear "unavailable"). */
  stop(): void {
    this.stopping.abort();
    this.memory.clear();
    this.failures.clear();
  }

  private async load(key: string, assignment: PackageAssignment, requester: ImageRequester): Promise<ImageOutcome> {
    const what = describePackage(assignment);
    const verifier = this.verifierFor(assignment);
    if (typeof verifier === 'string') return this.refuse(what, verifier);

    const cached = await this.readCache(key, assignment, verifier);
    if (cached) return this.ready(key, cached);

    const missing: string[] = [];
    const failures: string[] = [];
    const mismatches: string[] = [];
    for (const source of this.options.sources) {
      if (this.stopping.signal.aborted) break;
      const attempt = await this.fetchFrom(source, assignment, requester);
      switch (attempt.kind) {
        case 'skipped':
          continue;
        case 'missing':
          missing.push(`${source}: ${attempt.reason}`);
          continue;
        case 'failed':
          this.counts.fetchFailures += 1;
          failures.push(`${source}: ${attempt.reason}`);
          this.log.warn({ package: what, source, reason: attempt.reason, device: requester.deviceName }, 'package image download failed');
          continue;
        case 'too-large':
          return this.refuse(what, attempt.reason);
        case 'data': {
          const wrong = this.check(assignment, verifier, attempt.data);
          if (wrong) {
            // Another source may have the right bytes (a stale file in firmware.dir, say).
            mismatches.push(`${attempt.from} ${wrong}`);
            this.log.warn({ package: what, source, reason: wrong }, 'package image does not match its assignment; not served');
            continue;
          }
          this.counts.fetches += 1;
          if (!verifier) this.log.warn({ package: what, source }, 'package has no fw_checksum: serving the image unverified (firmware.requireChecksum is false)');
          this.log.info({ package: what, source, bytes: attempt.data.length }, 'package image fetched and verified');
          const image = this.imageOf(key, attempt.data);
          await this.writeCache(key, image.data, what);
          return this.ready(key, image);
        }
      }
    }
    if (mismatches.length > 0) return this.refuse(what, mismatches.join('; '));
    if (this.stopping.signal.aborted) return { status: 'unavailable', reason: 'the gateway is stopping', retryAfterSeconds: 30 };
    if (missing.length === 0 && failures.length === 0) {
      return this.refuse(
        what,
        'no firmware source applies to it: the package has no fw_url, and firmware.dir / firmware.thingsboardUrl are not set (or not in firmware.sources)',
      );
    }
    const reason = `no source could provide it (${[...failures, ...missing].join('; ')})`;
    this.log.warn({ package: what, reason }, 'package image not available');
    return { status: 'unavailable', reason, retryAfterSeconds: RETRY_UNAVAILABLE_MS / 1000 };
  }

  /** How to check the image: null when the package has no checksum and that is allowed; a string: why not. */
  private verifierFor(assignment: PackageAssignment): Verifier | string {
    const { checksum, checksumAlgorithm } = assignment;
    if (checksum === undefined) {
      return this.options.requireChecksum
        ? 'the package has no fw_checksum to verify it against (set firmware.requireChecksum false to serve such packages unverified)'
        : null;
    }
    const algorithm = parseChecksumAlgorithm(checksumAlgorithm ?? 'SHA256');
    if (!algorithm) return `checksum algorithm "${checksumAlgorithm}" is not one of ${CHECKSUM_ALGORITHMS.join(', ')}`;
    return { algorithm, checksum };
  }

  /** What is wrong with `data` for this package, or undefined when it is the assigned image. */
  private check(assignment: PackageAssignment, verifier: Verifier, data: Buffer): string | undefined {
    if (data.length > this.options.maxImageBytes) return `is ${data.length} bytes, above firmware.maxImageBytes (${this.options.maxImageBytes})`;
    if (assignment.size !== undefined && data.length !== assignment.size) return `is ${data.length} bytes, but fw_size says ${assignment.size}`;
    if (verifier && !checksumMatches(verifier.algorithm, verifier.checksum, data)) {
      return `does not match its ${verifier.algorithm} checksum ${verifier.checksum}`;
    }
    return undefined;
  }

  private fetchFrom(source: FirmwareConfig['sources'][number], assignment: PackageAssignment, requester: ImageRequester): Promise<Attempt> {
    switch (source) {
      case 'dir':
        return this.readFromDir(assignment);
      case 'url': {
        const { url } = assignment;
        if (url === undefined) return Promise.resolve({ kind: 'skipped' });
        if (!/^https?:\/\//i.test(url)) return Promise.resolve({ kind: 'failed', reason: `fw_url "${redactUrl(url)}" is not an http:// or https:// URL` });
        return this.download(url, `fw_url ${logSafe(url)}`);
      }
      case 'thingsboard': {
        const base = this.options.thingsboardUrl;
        if (base === '' || requester.token === undefined) return Promise.resolve({ kind: 'skipped' });
        const feature = assignment.kind === 'fw' ? 'firmware' : 'software';
        const query = new URLSearchParams({ title: assignment.title, version: assignment.version });
        const url = `${base.replace(/\/+$/, '')}/api/v1/${encodeURIComponent(requester.token)}/${feature}?${query}`;
        // The reason may reach other devices asking for the same package: the token's fingerprint, no name.
        return this.download(url, `ThingsBoard ${redactUrl(base)} with a device token (sha256 ${fingerprint(requester.token)}…)`);
      }
    }
  }

  /** <dir>/<title>/<version>, <dir>/<title>-<version>.bin or <dir>/<title>-<version>. */
  private async readFromDir(assignment: PackageAssignment): Promise<Attempt> {
    const { dir } = this.options;
    if (dir === '') return { kind: 'skipped' };
    const { title, version } = assignment;
    // Titles and versions come from ThingsBoard; they name files in the directory, never paths out of it.
    if (![title, version].every((part) => part !== '.' && part !== '..' && !/[/\\\0]/.test(part))) {
      return { kind: 'missing', reason: `title or version contains a path separator; not looked up in ${dir}` };
    }
    for (const name of [join(title, version), `${title}-${version}.bin`, `${title}-${version}`]) {
      const path = join(dir, name);
      try {
        const info = await stat(path);
        if (!info.isFile()) continue;
        if (info.size > this.options.maxImageBytes) {
          return { kind: 'too-large', reason: `${path} is ${info.size} bytes, above firmware.maxImageBytes (${this.options.maxImageBytes})` };
        }
        return { kind: 'data', data: await readFile(path), from: path };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        return { kind: 'failed', reason: `cannot read ${path}: ${(error as Error).message}` };
      }
    }
    return { kind: 'missing', reason: `none of ${title}/${version}, ${title}-${version}.bin, ${title}-${version} in ${dir}` };
  }

  /** One HTTP GET, bounded in time and size; `what` names the source in answers and logs (no secrets). */
  private async download(url: string, what: string): Promise<Attempt> {
    const limit = this.options.maxImageBytes;
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.fetchTimeoutMs)]);
    try {
      const response = await this.fetchImpl(url, { signal, redirect: 'follow' });
      if (response.status === 404) {
        await response.body?.cancel();
        return { kind: 'missing', reason: `${what} answered 404 Not Found` };
      }
      if (!response.ok) {
        await response.body?.cancel();
        const hint = response.status === 401 || response.status === 403 ? ' (for the "thingsboard" source the registry tokens must be ThingsBoard access tokens)' : '';
        return { kind: 'failed', reason: `${what} answered HTTP ${response.status}${hint}` };
      }
      const declared = Number(response.headers.get('content-length'));
      if (declared > limit) {
        await response.body?.cancel();
        return { kind: 'too-large', reason: `${what} offers ${declared} bytes, above firmware.maxImageBytes (${limit})` };
      }
      const chunks: Buffer[] = [];
      let total = 0;
      if (response.body) {
        for await (const chunk of response.body) {
          total += (chunk as Uint8Array).length;
          if (total > limit) {
            await response.body.cancel().catch(() => undefined);
            return { kind: 'too-large', reason: `${what} sent more than firmware.maxImageBytes (${limit})` };
          }
          chunks.push(Buffer.from(chunk as Uint8Array));
        }
      }
      return { kind: 'data', data: Buffer.concat(chunks, total), from: `the image from ${what}` };
    } catch (error) {
      const name = (error as Error).name;
      if (name === 'TimeoutError') return { kind: 'failed', reason: `${what} took longer than firmware.fetchTimeoutMs (${this.options.fetchTimeoutMs} ms)` };
      if (name === 'AbortError') return { kind: 'failed', reason: 'the gateway is stopping' };
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      return { kind: 'failed', reason: `${what} unreachable: ${cause?.code ?? cause?.message ?? (error as Error).message}` };
    }
  }

  private async readCache(key: string, assignment: PackageAssignment, verifier: Verifier): Promise<FirmwareImage | undefined> {
    const path = this.cachePath(key);
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch {
      return undefined;
    }
    const wrong = this.check(assignment, verifier, data);
    if (wrong) {
      // Disk corruption or a file put there by hand: never served; fetched again below.
      this.log.warn({ package: describePackage(assignment), file: path, reason: wrong }, 'cached package image is damaged; deleting it');
      await rm(path, { force: true }).catch(() => undefined);
      return undefined;
    }
    const now = new Date(this.now());
    await utimes(path, now, now).catch(() => undefined);
    return this.imageOf(key, data);
  }

  /**
   * Keeps a verified image across restarts: written whole and renamed into place, then the least
   * recently used images go until the cache is within firmware.cacheMaxBytes. A failed write (full disk)
   * costs a download after a restart, nothing else.
   */
  private async writeCache(key: string, data: Buffer, what: string): Promise<void> {
    const { cacheDir, cacheMaxBytes } = this.options;
    if (data.length > cacheMaxBytes) {
      this.log.warn({ package: what, bytes: data.length, cacheMaxBytes }, 'package image larger than firmware.cacheMaxBytes; kept in memory only');
      return;
    }
    const path = this.cachePath(key);
    const temporary = `${path}.${process.pid}.tmp`;
    try {
      // Not mkdir's recursive option: under /proc it never returns (see config/paths.ts).
      createDirectories(cacheDir);
      await writeFile(temporary, data);
      await rename(temporary, path);
    } catch (error) {
      await rm(temporary, { force: true }).catch(() => undefined);
      this.log.error({ package: what, dir: cacheDir, err: error }, 'cannot keep the package image on disk; it is served from memory and downloaded again after a restart');
      return;
    }
    await this.evict(key).catch((error: unknown) => this.log.warn({ dir: cacheDir, err: error }, 'cannot tidy the firmware cache'));
  }

  private async evict(keep: string): Promise<void> {
    const { cacheDir, cacheMaxBytes } = this.options;
    const files = [];
    for (const name of await readdir(cacheDir)) {
      if (!name.endsWith('.bin')) continue;
      const info = await stat(join(cacheDir, name)).catch(() => undefined);
      if (info?.isFile()) files.push({ name, size: info.size, used: info.mtimeMs });
    }
    let total = files.reduce((sum, file) => sum + file.size, 0);
    for (const file of files.sort((a, b) => a.used - b.used)) {
      if (total <= cacheMaxBytes) break;
      if (file.name === `${keep}.bin`) continue;
      await rm(join(cacheDir, file.name), { force: true });
      total -= file.size;
      this.log.info({ file: file.name, bytes: file.size }, 'firmware cache full: least recently used image deleted');
    }
  }

  private cachePath(key: string): string {
    return join(this.options.cacheDir, `${key}.bin`);
  }

  private imageOf(key: string, data: Buffer): FirmwareImage {
    return { data, etag: createHash('sha256').update(data).digest().subarray(0, 8), key };
  }

  private ready(key: string, image: FirmwareImage): ImageOutcome {
    this.memory.set(key, image);
    return { status: 'ready', image };
  }

  private refuse(what: string, reason: string): ImageOutcome {
    this.counts.refused += 1;
    this.log.error({ package: what, reason }, 'package image refused; devices asking for it are answered 5.02');
    return { status: 'refused', reason };
  }

  private remember(key: string, outcome: ImageOutcome): void {
    if (outcome.status === 'ready') {
      this.failures.delete(key);
      return;
    }
    if (this.failures.size >= MAX_REMEMBERED_FAILURES) {
      const now = this.now();
      for (const [old, failure] of this.failures) if (failure.until <= now) this.failures.delete(old);
      if (this.failures.size >= MAX_REMEMBERED_FAILURES) this.failures.delete(this.failures.keys().next().value as string);
    }
    const wait = outcome.status === 'refused' ? RETRY_REFUSED_MS : outcome.retryAfterSeconds * 1000;
    this.failures.set(key, { outcome, until: this.now() + wait });
  }
}

/** A URL fit for logs and answers: no credentials, no query (signed URLs carry secrets there). */
function logSafe(url: string): string {
  const redacted = redactUrl(url);
  const query = redacted.indexOf('?');
  return query < 0 ? redacted : `${redacted.slice(0, query)}?…`;
}
