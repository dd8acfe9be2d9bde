// The OTA package ThingsBoard assigned to a device, as its fw_* (firmware) or sw_* (software) shared
// attributes describe it (docs/device-api-coap.md#firmware-updates).
import { createHash } from 'node:crypto';
import type { AttributeSet, JsonValue } from '../model.js';

export type PackageKind = 'fw' | 'sw';

export interface PackageAssignment {
  readonly kind: PackageKind;
  readonly title: string;
  readonly version: string;
  /** Bytes, when ThingsBoard gave fw_size. */
  readonly size: number | undefined;
  /** fw_checksum_algorithm as given (checked when the image is verified). */
  readonly checksumAlgorithm: string | undefined;
  readonly checksum: string | undefined;
  /** fw_url: packages kept outside ThingsBoard. */
  readonly url: string | undefined;
}

const FIELDS = ['title', 'version', 'size', 'checksum_algorithm', 'checksum', 'url'] as const;

/** The shared attribute keys that describe a package of `kind`. */
export function assignmentKeys(kind: PackageKind): string[] {
  return FIELDS.map((field) => `${kind}_${field}`);
}

/** The package of `kind` the attributes assign, or undefined when they name no title and version. */
export function assignmentFrom(kind: PackageKind, attributes: AttributeSet): PackageAssignment | undefined {
  const text = (field: (typeof FIELDS)[number]): string | undefined => {
    const value: JsonValue | undefined = attributes[`${kind}_${field}`];
    if (typeof value === 'string') return value === '' ? undefined : value;
    // A version may be pushed as a number (1.2 or 3).
    return typeof value === 'number' && Number.isFinite(value) ? String(value) : undefined;
  };
  const title = text('title');
  const version = text('version');
  if (title === undefined || version === undefined) return undefined;
  const size = Number(text('size'));
  return {
    kind,
    title,
    version,
    size: Number.isSafeInteger(size) && size >= 0 && text('size') !== undefined ? size : undefined,
    checksumAlgorithm: text('checksum_algorithm'),
    checksum: text('checksum'),
    url: text('url'),
  };
}

/** The kinds of package whose description changes when these attribute keys do. */
export function packageKindsTouched(keys: readonly string[]): PackageKind[] {
  return (['fw', 'sw'] as const).filter((kind) => keys.some((key) => key.startsWith(`${kind}_`)));
}

/**
 * One name for one image, whichever devices it is assigned to: a package with the same title, version
 * and checksum is the same bytes. Hex, so it is also a safe file name in the disk cache.
 */
export function packageKey(assignment: PackageAssignment): string {
  const { kind, title, version, checksumAlgorithm, checksum, url } = assignment;
  const identity = JSON.stringify([kind, title, version, checksumAlgorithm ?? null, checksum ?? null, checksum ? null : (url ?? null)]);
  return createHash('sha256').update(identity).digest('hex').slice(0, 32);
}

/** `firmware "boiler-fw" version "1.2.0"`, for answers and log lines. */
export function describePackage(assignment: PackageAssignment): string {
  return `${assignment.kind === 'fw' ? 'firmware' : 'software'} "${assignment.title}" version "${assignment.version}"`;
}
