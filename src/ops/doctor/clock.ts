// The system clock: not before this release existed nor before the installation, synchronized with
// network time, and not behind readings the outbox holds.
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { duration, isoDate, isoMinute } from '../words.js';
import type { Context } from './context.js';
import type { Report } from './report.js';

/** No coap2mqtt release predates this: a clock before it is certainly wrong. */
const CLOCK_FLOOR = Date.UTC(2026, 0, 1);
const DAY_MS = 86_400_000;
/** Outbox records stamped further ahead than this mean the clock went back. */
export const FUTURE_TOLERANCE_MS = 5 * 60_000;
const FUTURE_FAIL_MS = 60 * 60_000;

export async function checkClock(report: Report, context: Context): Promise<void> {
  const now = Date.now();
  const shown = isoMinute(now);
  const installed = installationTime();
  if (now < CLOCK_FLOOR) {
    report.add('FAIL', 'clock', `the system time is ${shown}, before this version of coap2mqtt existed: set the time (sudo timedatectl set-ntp true, or sudo date -s "YYYY-MM-DD HH:MM"); until then certificates look not yet valid and readings carry wrong times`);
  } else if (installed !== undefined && now < installed - DAY_MS) {
    report.add('FAIL', 'clock', `the system time is ${shown}, before ${isoDate(installed)} when this installation's files were written: set the time (sudo timedatectl set-ntp true, or sudo date -s "YYYY-MM-DD HH:MM")`);
  } else {
    const synchronized = await ntpSynchronized();
    if (synchronized === false) {
      report.add('warn', 'clock', `${shown}, not synchronized with network time (timedatectl): readings are stamped with this clock; check timedatectl timesync-status, and that the box reaches an NTP server`);
    } else {
      report.add('ok', 'clock', `${shown}${synchronized ? ', synchronized with network time' : ''}`);
    }
  }
  const outbox = context.outbox;
  if (outbox?.state === 'readable' && outbox.newestCreatedAt !== undefined && outbox.newestCreatedAt - now > FUTURE_TOLERANCE_MS) {
    const ahead = outbox.newestCreatedAt - now;
    report.add(
      ahead > FUTURE_FAIL_MS ? 'FAIL' : 'warn',
      'clock',
      `the outbox holds ${outbox.createdAfter} reading${outbox.createdAfter === 1 ? '' : 's'} stamped up to ${isoMinute(outbox.newestCreatedAt)}, ${duration(ahead)} ahead of now: the clock went back since they were stored (or was ahead then); check which time is right and that network time is on`,
    );
  }
}

/**
 * When this installation's files were last written: a clock before it is wrong. Files unpacked from an npm
 * tarball carry a fixed 1985 date, so only dates after the floor count.
 */
function installationTime(): number | undefined {
  let latest: number | undefined;
  for (const url of [new URL('../../cli.js', import.meta.url), new URL(import.meta.url), new URL('../../../package.json', import.meta.url)]) {
    try {
      const mtime = statSync(url).mtimeMs;
      if (mtime >= CLOCK_FLOOR && (latest === undefined || mtime > latest)) latest = mtime;
    } catch {
      // Not there in this layout.
    }
  }
  return latest;
}

/** timedatectl's verdict; undefined where there is no timedatectl or no systemd to ask. */
function ntpSynchronized(): Promise<boolean | undefined> {
  return new Promise((done) => {
    try {
      execFile('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], { timeout: 2000 }, (error, stdout) => {
        const answer = String(stdout).trim();
        done(error || (answer !== 'yes' && answer !== 'no') ? undefined : answer === 'yes');
      });
    } catch {
      done(undefined);
    }
  });
}
