// What every dialect is to the device API: a path space it claims, and a handler from a request to an
// outcome. The checks every dialect makes alike (blocked addresses, the device's own rate) live here.
import type { Device } from '../model.js';
import type { RequestLimits } from './limits.js';
import type { Answer, Outcome } from './outcome.js';
import type { DeviceRequest } from './request.js';

export interface Handled {
  /** What the request asked for, as an index into OPERATIONS (request metrics). */
  readonly operation: number;
  /** The device the request was authenticated as, even when it is then refused (its relations follow its address). */
  readonly device?: Device;
  readonly outcome: Answer;
}

export interface Dialect {
  /** The path in this dialect's own terms (aliases resolved), or undefined when the path is not its own. */
  claim(segments: readonly string[]): readonly string[] | undefined;
  handle(request: DeviceRequest, segments: readonly string[]): Handled;
  /** The operation of a request the front end answered before the dialect saw it (a 4.29, a Block1 2.31). */
  operationOf(request: Pick<DeviceRequest, 'method' | 'updates'>, segments: readonly string[]): number;
  /** Where its paths live, for the answer to a path no dialect claims. */
  readonly hint: string;
}

/** The checks before and after a dialect knows the device, the same in every dialect. */
export interface Gate {
  /**
   * Too many requests for a request from an address blocked for trying unknown tokens, asked before a
   * token is looked up so a guesser learns nothing; a DTLS identity already proved who the device is.
   */
  blocked(request: DeviceRequest): Outcome | undefined;
  /** The device's own rate. A continuation (Block2, Observe 1) or a registration replayed at start uses none of it. */
  admitDevice(request: DeviceRequest, device: Device): Outcome | undefined;
}

export function createGate(limits: Pick<RequestLimits, 'admitDevice' | 'refuseBlockedSource'>): Gate {
  return {
    blocked(request) {
      if (request.peer.credential || request.peer.device) return undefined;
      const refusal = limits.refuseBlockedSource(request.peer.address, request.receivedAt);
      return refusal && { kind: 'refused', refusal };
    },
    admitDevice(request, device) {
      if (request.continuation || request.restored) return undefined;
      const refusal = limits.admitDevice(device.name, request.receivedAt);
      return refusal && { kind: 'refused', refusal };
    },
  };
}
