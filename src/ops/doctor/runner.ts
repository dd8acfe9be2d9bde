// `coap2mqtt doctor`: the checklist a technician runs on the box. Each check is one line a person can act
// on: what is wrong, which key or file, what to do. It changes nothing: it does not create the state
// directory, takes no lock, writes no file, and logs in to the broker under a client id of its own, so
// the running gateway's session is never evicted. The checks run in the order of CHECKS, one file each.
import type { Output } from '../../config/check-config.js';
import type { LoadResult } from '../../config/load.js';
import { checkClock } from './clock.js';
import { checkConfiguration } from './configuration.js';
import { gatherContext, type Check } from './context.js';
import { checkKeyMaterial } from './key-material.js';
import { checkPorts } from './ports.js';
import { formatFinding, Report, type Status } from './report.js';
import { checkStateDir } from './state-dir.js';
import { checkStorage } from './storage.js';
import { checkUpstream } from './upstream.js';

export { formatFinding, type Finding, type Status } from './report.js';

export interface DoctorOptions {
  /** One JSON document on stdout instead of lines. */
  readonly json: boolean;
}

/** state.dir goes on to the disk and the outbox below it, when the directory can be used. */
const CHECKS: readonly Check[] = [checkConfiguration, checkUpstream, checkKeyMaterial, checkClock, checkStateDir, checkStorage, checkPorts];

/** Runs every check, prints them, and returns the exit status: 0 without FAIL, 1 with. */
export async function runDoctor(
  file: string | undefined,
  result: LoadResult & { ok: true },
  options: DoctorOptions,
  output: Output,
): Promise<number> {
  const report = new Report(options.json ? undefined : (finding) => output.out(formatFinding(finding)));
  const context = gatherContext(file, result);
  for (const check of CHECKS) await check(report, context);

  const counts = report.counts();
  const summary = summaryLine(counts);
  if (options.json) {
    output.out(
      JSON.stringify(
        {
          ok: counts.FAIL === 0,
          failures: counts.FAIL,
          warnings: counts.warn,
          passed: counts.ok,
          summary,
          checks: report.findings.map(({ status, check, message }) => ({ status: status.toLowerCase(), check, message })),
        },
        null,
        2,
      ),
    );
  } else {
    output.out('');
    output.out(summary);
  }
  return counts.FAIL === 0 ? 0 : 1;
}

function summaryLine(counts: Record<Status, number>): string {
  const total = counts.ok + counts.warn + counts.FAIL;
  if (counts.FAIL > 0) {
    return `${counts.FAIL} FAIL, ${counts.warn} warn, ${counts.ok} ok: the gateway will not work as configured until the FAIL lines are fixed`;
  }
  if (counts.warn > 0) return `0 FAIL, ${counts.warn} warn, ${counts.ok} ok: the gateway can run; the warnings are worth a look`;
  return `all ${total} checks ok`;
}
