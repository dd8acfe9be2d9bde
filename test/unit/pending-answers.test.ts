import { afterEach, describe, expect, it, vi } from 'vitest';
import { PendingAnswers } from '../../src/bridge/pending-answers.js';

afterEach(() => vi.useRealTimers());

describe('pending answers', () => {
  it('matches answers by id and ignores unknown ids', async () => {
    const pending = new PendingAnswers<string>(1000);
    const a = pending.open();
    const b = pending.open();
    expect(a.id).not.toBe(b.id);
    expect(pending.settle(b.id, 'for b')).toBe(true);
    expect(pending.settle(b.id, 'again')).toBe(false);
    expect(pending.settle(999, 'stray')).toBe(false);
    expect(pending.settle(a.id, 'for a')).toBe(true);
    expect(await a.answer).toBe('for a');
    expect(await b.answer).toBe('for b');
  });

  it('ends a wait without an answer after the timeout, and on cancel', async () => {
    vi.useFakeTimers();
    const pending = new PendingAnswers<string>(1000);
    const late = pending.open();
    const cancelled = pending.open();
    pending.cancel(cancelled.id);
    expect(await cancelled.answer).toBeUndefined();
    vi.advanceTimersByTime(1000);
    expect(await late.answer).toBeUndefined();
    expect(pending.settle(late.id, 'too late')).toBe(false);
  });
});
