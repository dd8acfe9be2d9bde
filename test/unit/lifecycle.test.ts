// The composition root's parts list: stops run last-registered first, a failing stop does not keep the
// others from running, and the failure still reaches the caller (the CLI exits 1 on it).
import { describe, expect, it } from 'vitest';
import { Parts } from '../../src/lifecycle.js';
import { createLogger } from '../../src/log.js';

describe('Parts', () => {
  it('unwinds in reverse order, awaiting each stop', async () => {
    const parts = new Parts(createLogger('silent'));
    const stopped: string[] = [];
    parts.onStop('ops endpoint', () => stopped.push('ops endpoint'));
    const store = parts.add('store', { name: 'store' }, (part) => stopped.push(part.name));
    parts.add('upstream', 'upstream', async (part) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      stopped.push(part);
    });
    parts.add('socket', 'socket', (part) => stopped.push(part));
    expect(store).toEqual({ name: 'store' });
    await parts.unwind();
    expect(stopped).toEqual(['socket', 'upstream', 'store', 'ops endpoint']);
    // Unwound once: a second stop finds nothing left to stop.
    await parts.unwind();
    expect(stopped).toHaveLength(4);
  });

  it('stops the others when one fails, logs it by name, and throws the first failure at the end', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const parts = new Parts(createLogger('error', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }));
    const stopped: string[] = [];
    parts.onStop('session store', () => stopped.push('session store'));
    parts.onStop('outbox', () => {
      throw new Error('disk gone');
    });
    parts.onStop('broker', () => Promise.reject(new Error('second')));
    await expect(parts.unwind()).rejects.toThrow('second');
    expect(stopped).toEqual(['session store']);
    expect(lines.map((line) => line['part'])).toEqual(['broker', 'outbox']);
  });
});
