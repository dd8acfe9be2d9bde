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
    expect(a.accept('k', 'source', block(0, true), bytes(16, 0x31), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('k', 'source', block(1, true), bytes(16, 0x32), undefined)).toEqual({ kind: 'continue' });
    const done = a.accept('k', 'source', block(2, false), bytes(5, 0x33), undefined);
    expect(done).toEqual({ kind: 'complete', body: Buffer.concat([bytes(16, 0x31), bytes(16, 0x32), bytes(5, 0x33)]) });
    expect(a.inProgress).toBe(0);
  });

  it('answers 4.08 for a block that does not follow, or comes without its predecessors', () => {
    const a = assembler();
    expect(a.accept('k', 'source', block(3, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
    a.accept('k', 'source', block(0, true), bytes(16), undefined);
    expect(a.accept('k', 'source', block(2, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
  });

  it('answers 4.13 with Size1 when Size1 announces too much or the body grows past the limit', () => {
    const a = assembler(40);
    expect(a.accept('k', 'source', block(0, true), bytes(16), 1000)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityTooLarge, size1: 40 });
    a.accept('k', 'source', block(0, true), bytes(16), undefined);
    a.accept('k', 'source', block(1, true), bytes(16), undefined);
    expect(a.accept('k', 'source', block(2, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityTooLarge, size1: 40 });
  });

  it('refuses a non-final block that is not exactly the block size', () => {
    expect(assembler().accept('k', 'source', block(0, true), bytes(10), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.BadRequest });
  });

  it('keeps separate transfers apart and bounds how many it holds', () => {
    const a = assembler();
    a.accept('a', 'source a', block(0, true), bytes(16), undefined);
    a.accept('b', 'source b', block(0, true), bytes(16), undefined);
    a.accept('c', 'source c', block(0, true), bytes(16), undefined);
    expect(a.inProgress).toBe(2);
    expect(a.accept('a', 'source a', block(1, false), bytes(1), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.RequestEntityIncomplete });
    expect(a.accept('c', 'source c', block(1, false), bytes(1), undefined)).toMatchObject({ kind: 'complete' });
  });

  it('gives one source address at most a sixteenth of the uploads (at least 4), so a flood cannot evict the others', () => {
    const a = new Block1Assembler({ maxBodyBytes: 256, maxTransfers: 64, idleTimeoutMs: 60_000 });
    for (let i = 0; i < 4; i++) expect(a.accept(`x${i}`, 'flooder', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('x4', 'flooder', block(0, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.TooManyRequests, maxAge: 10 });
    // A body in one block needs no room; a block 0 again restarts the upload it names.
    expect(a.accept('x5', 'flooder', block(0, false), bytes(3), undefined)).toMatchObject({ kind: 'complete' });
    expect(a.accept('x0', 'flooder', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('d', 'device', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
    // Finished or abandoned uploads no longer count.
    expect(a.accept('x1', 'flooder', block(1, false), bytes(1), undefined)).toMatchObject({ kind: 'complete' });
    expect(a.accept('x2', 'flooder', block(5, false), bytes(1), undefined)).toMatchObject({ kind: 'reject' });
    expect(a.accept('x6', 'flooder', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('x7', 'flooder', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
    expect(a.accept('x8', 'flooder', block(0, true), bytes(16), undefined)).toMatchObject({ kind: 'reject', code: ResponseCode.TooManyRequests });
  });

  it('lets a source start again once its idle uploads have expired', async () => {
    const a = new Block1Assembler({ maxBodyBytes: 256, maxTransfers: 64, idleTimeoutMs: 30 });
    for (let i = 0; i < 4; i++) a.accept(`x${i}`, 'flooder', block(0, true), bytes(16), undefined);
    expect(a.accept('x4', 'flooder', block(0, true), bytes(16), undefined)).toMatchObject({ kind: 'reject' });
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(a.accept('x4', 'flooder', block(0, true), bytes(16), undefined)).toEqual({ kind: 'continue' });
  });

  it('keeps a copy of each block, not a view that holds its whole datagram', () => {
    const a = assembler();
    const datagram = Buffer.alloc(60_000, 0x41);
    a.accept('k', 'source', block(0, true), datagram.subarray(100, 116), undefined);
    datagram.fill(0x42);
    const done = a.accept('k', 'source', block(1, false), bytes(1, 0x43), undefined);
    expect(done).toEqual({ kind: 'complete', body: Buffer.concat([bytes(16, 0x41), bytes(1, 0x43)]) });
  });
});
