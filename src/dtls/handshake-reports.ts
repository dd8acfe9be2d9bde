// Why DTLS handshakes fail or are dropped, counted for /metrics and told to the technician: once per
// 10 minutes per kind (and per address for failures), so a flood cannot fill the log, and each line says
// what to do about it.
import type { Logger } from 'pino';
import { LogOncePer } from '../log.js';
import { sourceKey } from '../net/source-key.js';
import type { DropReason, HalfOpenPool } from './half-open-pool.js';
import type { FeedOutcome } from './native.js';
import type { DtlsConnection, DtlsServerOptions, DtlsStats } from './server.js';

type Limits = Pick<DtlsServerOptions, 'maxSessions' | 'maxHandshakes' | 'maxHandshakesPerAddress' | 'handshakeTimeoutMs'>;

export class HandshakeReports {
  private readonly failureLog = new LogOncePer(10 * 60_000);

  constructor(
    private readonly options: Limits,
    private readonly stats: DtlsStats,
    private readonly handshakes: Pick<HalfOpenPool<DtlsConnection>, 'limits' | 'size' | 'busiestAddress'>,
    private readonly log: Logger,
  ) {}

  /** A handshake refused because established sessions fill dtls.maxSessions and none has been idle long enough. */
  tableFull(key: string): void {
    this.stats.refusedTableFull++;
    if (this.failureLog.first('table-full')) {
      this.log.warn(
        { peer: key, maxSessions: this.options.maxSessions },
        'DTLS session table full and no session idle for a minute: new handshakes are refused; raise dtls.maxSessions if this many devices are expected',
      );
    }
  }

  /**
   * Counts a half-open handshake the pool dropped or refused, and says once per 10 minutes (per kind) what
   * is happening: the flood shows, with its busiest address, and the technician learns that established
   * sessions are safe and when a limit is worth raising.
   */
  handshakeDropped(reason: DropReason, address: string): void {
    this.stats.handshakesDropped[reason]++;
    const { maxHandshakes, maxHandshakesPerAddress } = this.options;
    const stalledAfterS = this.handshakes.limits.stalledAfterMs / 1000;
    if (reason === 'address_limit') {
      if (!this.failureLog.first('handshakes address limit')) return;
      this.log.warn(
        { address: sourceKey(address), maxHandshakesPerAddress },
        `DTLS handshakes from one address pile up unfinished: it has dtls.maxHandshakesPerAddress open, so a new one from there waits until one of them ` +
          `finishes or is silent for ${stalledAfterS} s; other addresses and established sessions are not affected. One host flooding ClientHellos ` +
          'does this; so do many devices behind one NAT or border router reconnecting at once: then raise dtls.maxHandshakesPerAddress',
      );
      return;
    }
    if (!this.failureLog.first('handshakes pool')) return;
    const busiest = this.handshakes.busiestAddress();
    const what =
      reason === 'pool_full'
        ? 'all dtls.maxHandshakes places are taken, so the one silent longest gives way to each new one'
        : `more than half of dtls.maxHandshakes places are taken, so those silent for ${stalledAfterS} s are dropped`;
    this.log.warn(
      { reason, inProgress: this.handshakes.size, maxHandshakes, busiestAddress: busiest?.address, itsHandshakes: busiest?.handshakes },
      `DTLS handshakes pile up unfinished: ${what}; established sessions are not affected. Usually a flood of ClientHellos that echo ` +
        'their cookie and fall silent (busiestAddress may name its source); if a whole fleet is reconnecting over slow links, raise dtls.maxHandshakes',
    );
  }

  /** A handshake that ended in an error: an unknown PSK identity, a refused certificate, or what OpenSSL said. */
  handshakeFailed(connection: DtlsConnection, outcome: FeedOutcome): void {
    this.stats.handshakeFailures++;
    const peer = connection.key;
    if (outcome.identityRefused) {
      this.stats.handshakesRefusedIdentity++;
      const identity = connection.offeredIdentity ?? '';
      if (this.failureLog.first(`identity ${connection.address} ${identity}`)) {
        this.log.warn({ peer, identity }, 'DTLS handshake refused: PSK identity is not registered to any device (add it as psk.identity of a device)');
      }
    } else if (connection.refusedCertificate) {
      this.stats.handshakesRefusedCertificate++;
      const { certificate, reason } = connection.refusedCertificate;
      if (this.failureLog.first(`certificate ${connection.address} ${certificate.fingerprint256}`)) {
        this.log.warn(
          { peer, subject: certificate.subject, fingerprint256: certificate.fingerprint256, reason },
          `DTLS handshake refused: client certificate ${reason}`,
        );
      }
    } else if (this.failureLog.first(`failure ${connection.address} ${outcome.error}`)) {
      this.log.warn({ peer, reason: outcome.error }, `DTLS handshake failed: ${outcome.error}`);
    }
  }

  handshakeTimedOut(connection: DtlsConnection): void {
    this.stats.handshakeTimeouts++;
    if (!this.failureLog.first(`timeout ${connection.address}`)) return;
    const identity = connection.offeredIdentity;
    // A wrong PSK makes no alert: both sides silently drop each other's Finished (docs/dtls.md).
    const hint = connection.identityKnown
      ? 'the PSK identity is registered, so the device probably uses a different key'
      : 'the device stopped answering (gone, packets lost, or it refused our certificate)';
    this.log.warn({ peer: connection.key, identity, timeoutMs: this.options.handshakeTimeoutMs }, `DTLS handshake timed out: ${hint}`);
  }
}
