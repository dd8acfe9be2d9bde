// Block1 (RFC 7959): request bodies larger than one datagram, reassembled before the request is handled.
import type { LRUCache } from 'lru-cache';
import { blockSize, type BlockOption } from './block.js';
import { ResponseCode, type CodeByte } from './codes.js';
import { boundedCache } from '../bounded-cache.js';

// The option codec lives in block.ts (Block2 uses it too); re-exported for existing importers.
export { blockSize, decodeBlock, encodeBlock, type BlockOption } from './block.js';

export type Block1Outcome =
  /** More blocks to come: answer 2.31 Continue echoing the block. */
  | { readonly kind: 'continue' }
  /** The body is whole; handle the request with it and echo the last block in the response. */
  | { readonly kind: 'complete'; readonly body: Buffer }
  | { readonly kind: 'reject'; readonly code: CodeByte; readonly reason: string; readonly size1?: number; readonly maxAge?: number };

export interface Block1Options {
  readonly maxBodyBytes: number;
  readonly maxTransfers: number;
  readonly idleTimeoutMs: number;
}

interface Transfer {
  readonly chunks: Buffer[];
  received: number;
  /** The source address it is counted against. */
  readonly source: string;
}

/**
 * One source address may have this share of the uploads in progress (32 of the default 500): several
 * devices behind one NAT uploading at once, but not a flood that evicts everyone else's uploads.
 */
const SOURCE_SHARE = 16;
const MIN_PER_SOURCE = 4;
/** Max-Age of the 4.29 for a source over its share: uploads in progress take seconds to finish. */
const RETRY_AFTER_SECONDS = 10;

export class Block1Assembler {
  // Bounded in count (oldest idle transfer evicted first) and in age, so buffered bytes stay
  // below maxTransfers × maxBodyBytes whatever devices do, and per source address; no timers involved.
  private readonly transfers: LRUCache<string, Transfer>;
  private readonly bySource = new Map<string, number>();
  private readonly maxPerSource: number;

  constructor(private readonly options: Block1Options) {
    this.maxPerSource = Math.min(options.maxTransfers, Math.max(MIN_PER_SOURCE, Math.ceil(options.maxTransfers / SOURCE_SHARE)));
    this.transfers = boundedCache(options.maxTransfers, {
      ttl: options.idleTimeoutMs,
      // Evicted, expired, completed, abandoned or replaced: no longer counted against its source.
      dispose: (transfer) => {
        const count = (this.bySource.get(transfer.source) ?? 1) - 1;
        if (count > 0) this.bySource.set(transfer.source, count);
        else this.bySource.delete(transfer.source);
      },
    });
  }

  /**
   * @param transferKey identifies the body being uploaded: peer, method and URI (tokens may change per block)
   * @param source the source address (IPv6: /64) its share is counted against
   * @param announcedSize the Size1 option, if the client sent one
   */
  accept(transferKey: string, source: string, block: BlockOption, payload: Buffer, announcedSize: number | undefined): Block1Outcome {
    const { maxBodyBytes } = this.options;
    const tooLarge: Block1Outcome = {
      kind: 'reject',
      code: ResponseCode.RequestEntityTooLarge,
      reason: `request body larger than ${maxBodyBytes} bytes`,
      size1: maxBodyBytes,
    };
    if (announcedSize !== undefined && announcedSize > maxBodyBytes) {
      this.transfers.delete(transferKey);
      return tooLarge;
    }
    const size = blockSize(block);
    if (block.more && payload.length !== size) {
      this.transfers.delete(transferKey);
      return {
        kind: 'reject',
        code: ResponseCode.BadRequest,
        reason: `Block1 ${block.num} has ${payload.length} bytes; blocks followed by more must hold exactly ${size}`,
      };
    }
    if (payload.length > size) {
      this.transfers.delete(transferKey);
      return {
        kind: 'reject',
        code: ResponseCode.BadRequest,
        reason: `Block1 ${block.num} carries ${payload.length} bytes, more than its block size ${size}`,
      };
    }

    const offset = block.num * size;
    let transfer: Transfer | undefined;
    if (block.num === 0) {
      if (block.more && !this.transfers.has(transferKey) && !this.roomFor(source)) {
        return {
          kind: 'reject',
          code: ResponseCode.TooManyRequests,
          reason: `too many Block1 uploads in progress from this address (at most ${this.maxPerSource})`,
          maxAge: RETRY_AFTER_SECONDS,
        };
      }
      transfer = { chunks: [], received: 0, source };
    } else {
      transfer = this.transfers.get(transferKey);
      if (!transfer || transfer.received !== offset) {
        this.transfers.delete(transferKey);
        return {
          kind: 'reject',
          code: ResponseCode.RequestEntityIncomplete,
          reason: transfer
            ? `Block1 ${block.num} does not follow the ${transfer.received} bytes received so far`
            : `Block1 ${block.num} arrived without the blocks before it (start again at block 0)`,
        };
      }
    }
    if (offset + payload.length > maxBodyBytes) {
      this.transfers.delete(transferKey);
      return tooLarge;
    }

    // A copy: the block is a view into its datagram, which options the gateway ignores can make far larger.
    transfer.chunks.push(Buffer.from(payload));
    transfer.received += payload.length;
    if (block.more) {
      if (block.num === 0) this.bySource.set(source, (this.bySource.get(source) ?? 0) + 1);
      this.transfers.set(transferKey, transfer);
      return { kind: 'continue' };
    }
    this.transfers.delete(transferKey);
    return { kind: 'complete', body: transfer.chunks.length === 1 ? transfer.chunks[0]! : Buffer.concat(transfer.chunks) };
  }

  get inProgress(): number {
    return this.transfers.size;
  }

  clear(): void {
    this.transfers.clear();
  }

  /** Whether `source` may start another upload; stale ones are only swept out when it looks full. */
  private roomFor(source: string): boolean {
    if ((this.bySource.get(source) ?? 0) < this.maxPerSource) return true;
    this.transfers.purgeStale();
    return (this.bySource.get(source) ?? 0) < this.maxPerSource;
  }
}
