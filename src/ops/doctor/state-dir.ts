// state.dir: an absolute path the service's user can create or write, holding no file it cannot write.
// When the directory can be used, the disk below it and the outbox in it come next.
import { statSync, type Stats } from 'node:fs';
import { isAbsolute } from 'node:path';
import { SERVICE_USER, type Context } from './context.js';
import { checkDisk } from './disk.js';
import { checkOutbox } from './outbox.js';
import { closedDirectory, currentUserName, describeFsError, filesServiceCannotWrite, modeString, nearestExisting, userName, writable } from './permissions.js';
import type { Report } from './report.js';

export function checkStateDir(report: Report, context: Context): void {
  const { config, stateDir: dir, service } = context;
  if (!isAbsolute(config.state.dir)) {
    report.add(
      'warn',
      'state.dir',
      `"${config.state.dir}" is a relative path, here ${dir}; the service resolves it against its own working directory, which may differ: set an absolute path such as /var/lib/coap2mqtt`,
    );
  }
  const who = service ? `the service's user ${service.name}` : `user ${currentUserName()}`;
  let stats: Stats | undefined;
  try {
    stats = statSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') {
      report.add('FAIL', 'state.dir', `cannot look at ${dir}: ${describeFsError(error)}`);
      return;
    }
  }
  let existing = dir;
  if (!stats) {
    const ancestor = nearestExisting(dir);
    existing = ancestor.path;
    if (!ancestor.stats.isDirectory()) {
      report.add('FAIL', 'state.dir', `${dir} cannot be created: ${ancestor.path} is a file, not a directory; set state.dir to a directory path`);
      return;
    }
    if (!writable(ancestor.path, ancestor.stats, service)) {
      report.add(
        'FAIL',
        'state.dir',
        `${dir} does not exist and ${who} cannot create it (no write permission on ${ancestor.path}): sudo install -d -o ${SERVICE_USER} -g ${SERVICE_USER} -m 750 ${dir}`,
      );
      return;
    }
    report.add('ok', 'state.dir', `${dir} does not exist yet; the gateway creates it at start (${who} may write ${ancestor.path})`);
  } else if (!stats.isDirectory()) {
    report.add('FAIL', 'state.dir', `${dir} is not a directory`);
    return;
  } else if (!writable(dir, stats, service)) {
    const closed = service && closedDirectory(service, dir);
    if (closed) {
      report.add('FAIL', 'state.dir', `${who} cannot reach ${dir}: it may not enter ${closed.dir} (owner ${userName(closed.stats.uid) ?? closed.stats.uid}, mode ${modeString(closed.stats)}): sudo chmod o+x ${closed.dir}, or move state.dir`);
    } else {
      const fix = service ? `sudo chown -R ${service.name}:${service.name} ${dir}` : 'make it writable for the user the gateway runs as';
      report.add('FAIL', 'state.dir', `${dir} is not writable by ${who} (owner ${userName(stats.uid) ?? stats.uid}, mode ${modeString(stats)}): ${fix}`);
    }
  } else {
    const foreign = service ? filesServiceCannotWrite(dir, service) : [];
    if (foreign.length > 0) {
      report.add(
        'FAIL',
        'state.dir',
        `${foreign.slice(0, 4).join(', ')}${foreign.length > 4 ? ` and ${foreign.length - 4} more` : ''} in ${dir} cannot be written by ${service!.name} (was the gateway run with sudo?): sudo chown -R ${service!.name}:${service!.name} ${dir}`,
      );
    } else {
      report.add('ok', 'state.dir', `${dir} exists and is writable by ${who}`);
    }
  }
  checkDisk(report, context, existing);
  checkOutbox(report, context);
}
