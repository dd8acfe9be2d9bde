import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FixedDelayDeadlines } from '../../src/coap/deadlines.js';

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('FixedDelayDeadlines', () => {
  it('fires each deadline once, after the delay, in the order they were set', () => {
    const deadlines = new FixedDelayDeadlines(500);
    const fired: string[] = [];
    deadlines.add(() => fired.push('a'));
    vi.advanceTimersByTime(100);
    deadlines.add(() => fired.push('b'));
    vi.advanceTimersByTime(399);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual(['a']);
    vi.advanceTimersByTime(100);
    expect(fired).toEqual(['a', 'b']);
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual(['a', 'b']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('never fires a cancelled deadline, wherever it sits in the queue, and re-arms for the next', () => {
    const deadlines = new FixedDelayDeadlines(500);
    const fired: number[] = [];
    const all = [0, 1, 2, 3, 4].map((n) => {
      vi.advanceTimersByTime(10);
      return deadlines.add(() => fired.push(n));
    });
    deadlines.cancel(all[0]!); // the head, which the timer was armed for
    deadlines.cancel(all[2]!);
    deadlines.cancel(all[4]!); // the tail
    deadlines.cancel(all[2]!); // twice: harmless
    vi.advanceTimersByTime(1000);
    expect(fired).toEqual([1, 3]);
    const late = deadlines.add(() => fired.push(5)); // after the queue emptied
    deadlines.cancel(all[1]!); // fired already: harmless
    vi.advanceTimersByTime(500);
    expect(fired).toEqual([1, 3, 5]);
    deadlines.cancel(late);
  });

  it('forgets everything on clear', () => {
    const deadlines = new FixedDelayDeadlines(500);
    const fire = vi.fn();
    deadlines.add(fire);
    deadlines.add(fire);
    deadlines.clear();
    vi.advanceTimersByTime(1000);
    expect(fire).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });
});
