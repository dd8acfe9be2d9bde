// One line per finding: its status, which check, and what to do.
export type Status = 'ok' | 'warn' | 'FAIL';

export interface Finding {
  readonly status: Status;
  readonly check: string;
  readonly message: string;
}

export function formatFinding({ status, check, message }: Finding): string {
  return `${status.padEnd(4)}  ${check}: ${message}`;
}

export class Report {
  readonly findings: Finding[] = [];

  constructor(private readonly emit: ((finding: Finding) => void) | undefined) {}

  add(status: Status, check: string, message: string): void {
    const finding = { status, check, message };
    this.findings.push(finding);
    this.emit?.(finding);
  }

  counts(): Record<Status, number> {
    const counts: Record<Status, number> = { ok: 0, warn: 0, FAIL: 0 };
    for (const { status } of this.findings) counts[status]++;
    return counts;
  }
}
