// Who a request speaks for. A DTLS session's credential, or a connection a front end authenticated, names a
// device; a token in the path must then name the same one. Without either the token alone decides.
import type { Logger } from 'pino';
import type { DeviceRegistry } from '../devices/registry.js';
import type { TokenCheck } from '../devices/token-check.js';
import type { Device } from '../model.js';
import type { DeviceRequest } from './request.js';

export interface Identify {
  /** The device, or why the request may not speak for one (the front end answers "unauthorized"). */
  (request: DeviceRequest, token: string | undefined): Device | string;
}

export function createIdentify(registry: Pick<DeviceRegistry, 'findByCredential'>, tokens: TokenCheck, log: Logger): Identify {
  return function identify(request, token) {
    const { credential } = request.peer;
    const byCredential = request.peer.device ?? (credential && registry.findByCredential(credential));
    if (credential && !byCredential) return 'the DTLS identity of this session no longer belongs to a registered device';
    if (token === undefined) {
      return byCredential ?? 'no access token in the path: use /api/v1/{token}/..., or DTLS with a PSK identity or client certificate';
    }
    // A registration replayed at start was not sent by that address: a token changed since counts nothing.
    const byToken = tokens.device(token, request.peer.address, request.receivedAt, !byCredential && !request.restored);
    if (!byToken) return 'unknown access token';
    if (byCredential && byCredential.name !== byToken.name) {
      if (tokens.firstTime(`mismatch ${request.peer.address}`)) {
        log.warn(
          { peer: request.peer.address, device: byCredential.name, tokenDevice: byToken.name },
          'request over DTLS with the token of another device refused (4.01); repeats from this address are not logged for 10 minutes',
        );
      }
      return credential ? 'the token in the path belongs to another device than this DTLS identity' : 'the token in the path belongs to another device than this connection';
    }
    return byToken;
  };
}
