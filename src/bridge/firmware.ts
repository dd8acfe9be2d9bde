// OTA packages for child devices (docs/device-api-coap.md). The Gateway MQTT API offers children no download, so
// the package a device's fw_* / sw_* shared attributes announce is fetched by the image store (once for
// every device with that package, verified against its checksum) and served from there.
import type { AttributeUpdate, Device } from '../model.js';
import { assignmentFrom, assignmentKeys, describePackage, packageKindsTouched, type PackageAssignment, type PackageKind } from '../firmware/assignment.js';
import type { FirmwareImage, FirmwareImageStore } from '../firmware/image-store.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import { requestScope } from './attribute-request.js';
import type { BridgeContext } from './context.js';

export type { PackageKind };

/** What the bridge needs for packages: the image store, and a device's access token for sources that ask for it. */
export interface PackageSupply {
  readonly store: FirmwareImageStore;
  readonly tokenOf: (deviceName: string) => string | undefined;
}

export type PackageOutcome =
  | { readonly status: 'ready'; readonly image: FirmwareImage; readonly assignment: PackageAssignment }
  /** No package of this kind is assigned to the device (4.04). */
  | { readonly status: 'not-assigned' }
  /** The device asked for another title or version than the one assigned (4.00). */
  | { readonly status: 'mismatch'; readonly assigned: PackageAssignment }
  /** Not now: the source is unreachable or still downloading (5.03 with Max-Age). */
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number }
  /** The image cannot be served: checksum or size wrong, too large, unverifiable (5.02). */
  | { readonly status: 'refused'; readonly reason: string };

/**
 * The package a device asks for: by title and version (CoAP, HTTP), or whichever is assigned now
 * (ThingsBoard's MQTT chunk requests, v2/fw/request/{id}/chunk/{n}, name none).
 */
export type PackageAsked = { readonly title: string | undefined; readonly version: string | undefined } | 'assigned';

/** What a device told "still downloading" is asked to wait before trying again. */
const RETRY_WHILE_FETCHING_SECONDS = 10;

/**
 * The device's package of `kind`, if `asked` names the one assigned to it. An image not
 * ready within `answerWithinMs` (counted from the request) is answered "unavailable" with a retry time
 * while its download goes on for the next try: the front end decides how long a device may be kept
 * waiting (a CoAP answer must fit the piggyback window, see src/device-api/dialects/thingsboard.ts).
 */
export async function packageFor(
  context: BridgeContext,
  device: Device,
  kind: PackageKind,
  asked: PackageAsked,
  answerWithinMs: number,
): Promise<PackageOutcome> {
  const started = Date.now();
  const supply = context.packages;
  const matches = (assignment: PackageAssignment): boolean => asked === 'assigned' || (assignment.title === asked.title && assignment.version === asked.version);
  let assignment = assignmentFrom(kind, context.attributes.shared(device.name));
  // Nothing known, or another version than the device asks for: the assignment may have changed while a
  // push was missed (ThingsBoard does not replay them), so ask ThingsBoard before saying no; once per
  // device and kind in a while, since block follow-ups are not rate-limited.
  if ((!assignment || !matches(assignment)) && context.packageAsks.first(`${device.name}\0${kind}`)) {
    const answered = await askAssignment(context, device, kind);
    if (answered !== undefined) assignment = answered ?? undefined;
  }
  if (!assignment) return { status: 'not-assigned' };
  if (!matches(assignment)) return { status: 'mismatch', assigned: assignment };

  // A download in progress asks once per block: answered from memory, without a timer per block.
  const cached = supply.store.cached(assignment);
  if (cached && Date.now() - started <= answerWithinMs) return { status: 'ready', image: cached, assignment };
  if (cached) {
    // Asking ThingsBoard took the time the answer had: the image would go out late (for CoAP, as a
    // separate response, which small clients lose). The next try finds the assignment remembered.
    return { status: 'unavailable', reason: `${describePackage(assignment)} is ready; ask again`, retryAfterSeconds: 1 };
  }
  const fetched = supply.store.get(assignment, { token: supply.tokenOf(device.name), deviceName: device.name });
  let timer: NodeJS.Timeout | undefined;
  const stillFetching = new Promise<'waiting'>((resolve) => {
    timer = setTimeout(() => resolve('waiting'), Math.max(0, answerWithinMs - (Date.now() - started)));
  });
  const outcome = await Promise.race([fetched, stillFetching]);
  clearTimeout(timer);
  if (outcome === 'waiting') {
    return {
      status: 'unavailable',
      reason: `${describePackage(assignment)} is still being downloaded by the gateway; try again shortly`,
      retryAfterSeconds: RETRY_WHILE_FETCHING_SECONDS,
    };
  }
  return outcome.status === 'ready' ? { status: 'ready', image: outcome.image, assignment } : outcome;
}

/** What a device is told when it gets no image, in the same words on every front end. */
export function packageDiagnostic(
  outcome: Extract<PackageOutcome, { status: 'not-assigned' | 'mismatch' | 'refused' }>,
  kind: PackageKind,
  title: string | undefined,
  version: string | undefined,
): string {
  const what = kind === 'fw' ? 'firmware' : 'software';
  switch (outcome.status) {
    case 'not-assigned':
      return `no ${what} package is assigned to this device`;
    case 'mismatch': {
      const asked = title === undefined || version === undefined ? 'title and version are required' : `asked for "${title}" version "${version}"`;
      return `${asked}; the assigned ${what} is "${outcome.assigned.title}" version "${outcome.assigned.version}"`;
    }
    case 'refused':
      return `the ${what} image cannot be served: ${outcome.reason}`;
  }
}

/**
 * A push that assigns a package starts its download at once, so the image is verified and waiting when
 * the device, told by the same push, asks for it.
 */
export function prefetchAssignedPackages(context: BridgeContext, deviceName: string, update: AttributeUpdate): void {
  const supply = context.packages;
  for (const kind of packageKindsTouched(Object.keys(update.changed))) {
    const assignment = assignmentFrom(kind, context.attributes.shared(deviceName));
    if (!assignment) continue;
    context.log.info({ device: deviceName, package: describePackage(assignment) }, 'package assigned; fetching its image');
    void supply.store.get(assignment, { token: supply.tokenOf(deviceName), deviceName });
  }
}

/**
 * The device's package as ThingsBoard has it now (its attributes are remembered): null when none is
 * assigned, undefined when ThingsBoard cannot be asked or did not answer.
 */
async function askAssignment(context: BridgeContext, device: Device, kind: PackageKind): Promise<PackageAssignment | null | undefined> {
  if (!context.upstream.connected) return undefined;
  context.presence.ensureAnnounced(device);
  try {
    const found = await requestScope(context, device, 'shared', assignmentKeys(kind));
    return found === undefined ? undefined : (assignmentFrom(kind, found) ?? null);
  } catch (error) {
    if (error instanceof UpstreamUnavailableError) return undefined;
    throw error;
  }
}
