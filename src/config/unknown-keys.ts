// Keys the schema does not know: a warning each (with a guess at the key meant), never an error, so
// a configuration written for a newer release still starts.
import { shorten } from './shape.js';

/** Unknown keys named one by one; beyond that, a count (each is a line at every start). */
const MAX_UNKNOWN_KEYS_SHOWN = 20;

export function unknownKeyWarnings(keys: readonly string[], known: readonly string[]): string[] {
  const shown = keys.slice(0, MAX_UNKNOWN_KEYS_SHOWN).map((key) => unknownKeyWarning(key, known));
  const more = keys.length - shown.length;
  return more > 0 ? [...shown, `${more} more unknown keys, ignored`] : shown;
}

export function unknownKeyWarning(key: string, known: readonly string[]): string {
  // A guess is worth it for typos, not for a 100,000-character key (edit distance is quadratic).
  const guess =
    key.length > 64
      ? undefined
      : known
          .map((candidate) => ({ candidate, distance: editDistance(key.toLowerCase(), candidate.toLowerCase()) }))
          .sort((a, b) => a.distance - b.distance)[0];
  const hint = guess && guess.distance <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${guess.candidate}?)` : '';
  return `${shorten(key)}: unknown key, ignored${hint}`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}
