// Numbers in words a technician reads at a glance, for doctor's lines.

const DAY_MS = 86_400_000;

export function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export function isoMinute(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export function days(ms: number): string {
  const count = Math.max(1, Math.round(ms / DAY_MS));
  return `${count} day${count === 1 ? '' : 's'}`;
}

export function duration(ms: number): string {
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 2 * DAY_MS) return `${Math.round(ms / 3_600_000)} h`;
  return days(ms);
}

export function bytes(count: number): string {
  if (count >= 2 ** 30) return `${(count / 2 ** 30).toFixed(1)} GiB`;
  if (count >= 2 ** 20) return `${(count / 2 ** 20).toFixed(1)} MiB`;
  if (count >= 2 ** 10) return `${(count / 2 ** 10).toFixed(1)} KiB`;
  return `${count} bytes`;
}
