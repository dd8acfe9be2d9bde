// What the outbox holds: nothing, readings waiting for a gateway to start, or readings a running gateway
// is not delivering. Read through the outbox's own inspection (outbox/inspect.ts).
import { bytes, duration, isoMinute } from '../words.js';
import type { Context } from './context.js';
import { describeFsError } from './permissions.js';
import type { Report } from './report.js';

/** Readings waiting this long while the gateway runs mean it cannot deliver them. */
const OUTBOX_STUCK_MS = 15 * 60_000;

export function checkOutbox(report: Report, context: Context): void {
  const snapshot = context.outbox;
  if (!context.config.outbox.enabled || !snapshot) return;
  if (snapshot.state === 'absent') {
    report.add('ok', 'outbox', 'no outbox.sqlite yet: the gateway creates it at its first start');
    return;
  }
  if (snapshot.state === 'unreadable') {
    report.add('warn', 'outbox', `cannot read ${snapshot.path}: ${unreadableOutbox(snapshot.cause, snapshot.error)}`);
    return;
  }
  const file = `${snapshot.path}, ${bytes(snapshot.fileBytes)} on disk`;
  const note = snapshot.leftoverJournal ? ' (left over from a gateway that did not stop cleanly; what its journal holds is not counted)' : '';
  if (snapshot.records === 0 || snapshot.oldestCreatedAt === undefined) {
    report.add('ok', 'outbox', `${file}: empty, everything was delivered${note}`);
    return;
  }
  const age = Date.now() - snapshot.oldestCreatedAt;
  const waiting = `${snapshot.records} reading${snapshot.records === 1 ? '' : 's'} waiting (${bytes(snapshot.bytes)}), the oldest from ${isoMinute(snapshot.oldestCreatedAt)}`;
  if (context.runningPid === undefined) {
    report.add('ok', 'outbox', `${file}: ${waiting}; they are delivered first when the gateway starts${note}`);
  } else if (age > OUTBOX_STUCK_MS) {
    report.add('warn', 'outbox', `${file}: ${waiting}, ${duration(age)} ago: the running gateway is not delivering them; see the upstream line${note}`);
  } else {
    report.add('ok', 'outbox', `${file}: ${waiting}${note}`);
  }
}

/** A file doctor cannot read, in words: what stopped it and what to do. */
function unreadableOutbox(cause: 'stat' | 'open' | 'busy' | 'damaged', error: unknown): string {
  const sudo = process.getuid?.() === 0 ? '' : ' (run doctor with sudo)';
  switch (cause) {
    case 'stat':
      return `${describeFsError(error)}${sudo}`;
    case 'open':
      return `${(error as Error).message}${sudo}`;
    case 'busy':
      return 'busy (the running gateway holds it); run doctor again';
    case 'damaged':
      return `not readable as an outbox: ${(error as Error).message}`;
  }
}
