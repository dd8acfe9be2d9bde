// Block2 (RFC 7959 §2.2–§2.4): a response too large for one block goes out as one block, and the client
// fetches the rest with follow-up requests carrying Block2 num > 0. Those are answered here from the
// representation sliced earlier, so the handler runs once per representation: a POST must not run again,
// and a route may refuse a plain GET on a resource it serves by Observe. A request's own Block2 with
// num 0 asks for smaller blocks than ours (early negotiation, §2.4). A `reproducible` response (a
// firmware image) is not kept: its follow-ups go back to the handler, which slices the same bytes again.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { blockSize, encodeBlock, type BlockOption } from './block.js';
import { OptionNumber, ResponseCode, type CodeByte } from './codes.js';
import { EMPTY, encodeUint, type CoapOption } from './message.js';
import type { CoapResponse } from './request.js';

export interface Block2Options {
  /** Largest block sent: 16..1024 bytes, a power of two. */
  readonly maxBlockSize: number;
  /** Cached representations (one per peer and URI at most). */
  readonly maxEntries: number;
  /** Cap on the payload bytes the cache holds. */
  readonly maxBytes: number;
  /** How long a representation stays fetchable block by block. */
  readonly ttlMs: number;
}

interface Representation {
  readonly code: CodeByte;
  readonly contentFormat: number | undefined;
  readonly maxAge: number | undefined;
  readonly payload: Buffer;
  readonly etag: Buffer;
}

export const BEYOND_THE_END: CoapResponse = { code: ResponseCode.BadOption, payload: 'block number beyond the end' };

/** Size exponent of a block size (16 → 0 … 1024 → 6); throws for anything RFC 7959 does not allow. */
export function sizeExponent(size: number): number {
  const szx = Math.log2(size) - 4;
  if (!Number.isInteger(szx) || szx < 0 || szx > 6) {
    throw new RangeError(`block size ${size} is not one of 16, 32, 64, 128, 256, 512, 1024`);
  }
  return szx;
}

/** Whether the payload needs more than one block of 2^(szx+4) bytes; decided without encoding most strings. */
export function exceedsBlock(response: CoapResponse, szx: number): boolean {
  const payload = response.payload;
  if (payload === undefined) return false;
  const limit = 16 << szx;
  if (typeof payload !== 'string') return payload.length > limit;
  // A UTF-16 code unit takes 1 to 3 UTF-8 bytes, so only strings near the limit need measuring.
  return payload.length > limit || (payload.length * 3 > limit && Buffer.byteLength(payload, 'utf8') > limit);
}

export class Block2Responder {
  readonly maxSzx: number;
  /** Made on first use: lru-cache allocates for its whole capacity, and most gateways never slice. */
  private cache: LRUCache<string, Representation> | undefined;

  constructor(private readonly options: Block2Options) {
    this.maxSzx = sizeExponent(options.maxBlockSize);
  }

  /**
   * The size exponent to answer with: the request's own Block2 size when it asked for smaller blocks, and
   * no larger than the transport carries in one datagram (DTLS at a small MTU).
   */
  szxFor(asked: BlockOption | undefined, transportMaxBlockSize?: number): number {
    const max = transportMaxBlockSize === undefined ? this.maxSzx : Math.min(this.maxSzx, sizeExponent(transportMaxBlockSize));
    return asked !== undefined && asked.szx < max ? asked.szx : max;
  }

  /**
   * Slices a response, remembers it under `key` for follow-ups and returns one block: the one `asked` for
   * (a follow-up the cache could not answer) or else block 0, which also carries Size2, the response's own
   * options and `observe` (the first block of a notification or registration is the one with Observe).
   */
  slice(key: string, response: CoapResponse, szx: number, asked: BlockOption | undefined, observe: number | undefined): CoapResponse {
    const payload = typeof response.payload === 'string' ? Buffer.from(response.payload, 'utf8') : (response.payload ?? EMPTY);
    let etag: Buffer | undefined;
    const extra: CoapOption[] = [];
    for (const option of response.options ?? []) {
      // A handler's own ETag names the representation; ours is only made up when there is none.
      if (option.number === OptionNumber.ETag) etag ??= option.value;
      else extra.push(option);
    }
    const representation: Representation = {
      code: response.code,
      contentFormat: response.contentFormat,
      maxAge: response.maxAge,
      payload,
      etag: etag ?? entityTag(payload, response.contentFormat),
    };
    if (payload.length > blockSize({ szx }) && response.reproducible !== true) {
      this.cache ??= new LRUCache({
        max: this.options.maxEntries,
        maxSize: this.options.maxBytes,
        sizeCalculation: (entry, entryKey) => entry.payload.length + entryKey.length,
        ttl: this.options.ttlMs,
      });
      this.cache.set(key, representation);
    }

    if (asked !== undefined) return this.block(representation, asked, szx, extra);
    extra.push({ number: OptionNumber.Size2, value: encodeUint(payload.length) });
    if (observe !== undefined) extra.push({ number: OptionNumber.Observe, value: encodeUint(observe) });
    return this.block(representation, { num: 0, more: false, szx }, szx, extra);
  }

  /** A follow-up (Block2 num > 0) answered from the cache; undefined when nothing is cached under `key`. */
  followUp(key: string, asked: BlockOption): CoapResponse | undefined {
    const representation = this.cache?.get(key);
    return representation && this.block(representation, asked, this.szxFor(asked), undefined);
  }

  clear(): void {
    this.cache?.clear();
  }

  /**
   * The block at the offset `asked` names, at size exponent `szx` (≤ the asked one). A smaller size than
   * asked keeps the offset and scales the number (RFC 7959 §2.4).
   */
  private block(representation: Representation, asked: BlockOption, szx: number, extra: CoapOption[] | undefined): CoapResponse {
    const { payload } = representation;
    const offset = asked.num * blockSize(asked);
    if (offset > 0 && offset >= payload.length) return BEYOND_THE_END;
    const size = blockSize({ szx });
    const end = Math.min(offset + size, payload.length);
    const options: CoapOption[] = [
      { number: OptionNumber.Block2, value: encodeBlock({ num: offset / size, more: end < payload.length, szx }) },
      { number: OptionNumber.ETag, value: representation.etag },
    ];
    if (extra) options.push(...extra);
    return {
      code: representation.code,
      payload: payload.subarray(offset, end),
      contentFormat: representation.contentFormat,
      maxAge: representation.maxAge,
      options,
    };
  }
}

/**
 * Four bytes of a hash of the representation: a client fetching blocks sees a change between them
 * (RFC 7959 §2.4), and an unchanged representation sliced again keeps its tag.
 */
function entityTag(payload: Buffer, contentFormat: number | undefined): Buffer {
  return createHash('sha256')
    .update(String(contentFormat ?? ''))
    .update(payload)
    .digest()
    .subarray(0, 4);
}
