import { describe, expect, it } from 'vitest';
import { Block1Assembler, decodeBlock, encodeBlock } from '../../src/coap/block1.js';
import { ResponseCode } from '../../src/coap/codes.js';

const assembler = (maxBodyBytes = 256) => new Block1Assembler({ maxBodyBytes, maxTransfers: 2, idleTimeoutMs: 60_000 });
const block = (num: number, more: boolean, szx = 0) => ({ num, more, szx });
const bytes = (n: number, fill = 0x61) => Buffer.alloc(n, fill);

describe('Block1 option', () => {
  it('encodes and decodes num, more and size', () => {
    for (const b of [block(0, true, 2), block(17, false, 6), block(1000, true, 0)]) expect(decodeBlock(encodeBlock(b))).toEqual(b);
    expect(decodeBlock(Buffer.from([0x0f]))).toBeUndefined(); // szx 7 is BERT, TCP only
    expect(decodeBlock(Buffer.alloc(4))).toBeUndefined();
  });
});

describe('Block1Assembler', () => {
  it('reassembles blocks in order', () => {
    const a = assembler();
    expect(a.accept('k', block(0, true), bytes(16, 0x31), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('k', block(1, true), bytes(16, 0x32), undefined)).toEqual({ kind: 'continue' });
    const done = a.accept('k', block(2, false), bytes(5, 0x33), undefined);
    expect(done).toEqual({ kind: 'complete', body: Buffer.concat([bytes(16, 0x31), bytes(16, 0x32), bytes(5, 0x33)]) });
    expect(a.inProgress).toBe(0);
  });

  it('answers 4.08 for a block that does not follow, or comes without its predecessors', () => {
    const a = assembler();
    expect(a.accept('k', block(3, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
    a.accept('k', block(0, true), bytes(16), undefined);
    expect(a.accept('k', block(2, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
  });

  it('answers 4.13 with Size1 when Size1 announces too much or the body grows past the limit', () => {
    const a = assembler(40);
    expect(a.accept('k', block(0, true), bytes(16), 1000)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityTooLarge, size1: 40 });
    a.accept('k', block(0, true), bytes(16), undefined);
    a.accept('k', block(1, true), bytes(16), undefined);
    expect(a.accept('k', block(2, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityTooLarge, size1: 40 });
  });

  it('refuses a non-final block that is not exactly the block size', () => {
    expect(assembler().accept('k', block(0, true), bytes(10), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.BadRequest });
  });

  it('keeps separate transfers apart and bounds how many it holds', () => {
    const a = assembler();
    a.accept('a', block(0, true), bytes(16), undefined);
    a.accept('b', block(0, true), bytes(16), undefined);
    a.accept('c', block(0, true), bytes(16), undefined);
    expect(a.inProgress).toBe(2);
    expect(a.accept('a', block(1, false), bytes(1), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
    expect(a.accept('c', block(1, false), bytes(1), undefined)).toMatchObject({ kind: 'complete' });
  });
});
