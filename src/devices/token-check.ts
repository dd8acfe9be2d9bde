// Who a token in a request names, for every device-facing front end (CoAP dialects, the HTTP device API):
// the registry answers; an unknown token counts against its source address (a guesser gets blocked) and is
// logged once per address and 10 minutes, with a fingerprint, never the token itself.
import type { Logger } from 'pino';
import type { RequestLimits } from '../device-api/limits.js';
import { LogOncePer, fingerprint } from '../log.js';
import type { Device } from '../model.js';
import type { DeviceRegistry } from './registry.js';

const LOG_WINDOW_MS = 10 * 60_000;

export class TokenCheck {
  private readonly unknownTokenLog = new LogOncePer(LOG_WINDOW_MS);

  constructor(
    private readonly registry: Pick<DeviceRegistry, 'findByToken'>,
    private readonly limits: Pick<RequestLimits, 'unknownToken'>,
    private readonly log: Logger,
  ) {}

  /**
   * The device with `token`, or undefined (the caller answers "unauthorized"). `counted`: false when the
   * peer already proved another identity (DTLS) and cannot be guessing.
   */
  device(token: string, peer: string, now: number, counted = true): Device | undefined {
    const device = this.registry.findByToken(token);
    if (device) return device;
    this.refused(token, peer, now, counted);
    return undefined;
  }

  /** A credential (token, activation code, provision key) that named nothing: counted and logged like a token. */
  refused(secret: string, peer: string, now: number, counted = true, what = 'access token'): void {
    if (counted) this.limits.unknownToken(peer, secret, now);
    if (this.unknownTokenLog.first(peer)) {
      this.log.warn(
        { peer, tokenSha256Prefix: fingerprint(secret) },
        `request with an unknown ${what} refused; repeats from this address are not logged for 10 minutes`,
      );
    }
  }

  /** Logs once per window per `key`: for refusals the caller words itself (a token of another device). */
  firstTime(key: string): boolean {
    return this.unknownTokenLog.first(key);
  }
}
