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
  | { readonly kind: 'reject'; readonly code: CodeByte; readonly reason: string; readonly size1?: number };

export interface Block1Options {
  readonly maxBodyBytes: number;
  readonly maxTransfers: number;
  readonly idleTimeoutMs: number;
}

interface Transfer {
  readonly chunks: Buffer[];
  received: number;
}

export class Block1Assembler {
  // Bounded in count (oldest idle transfer evicted first) and in age, so buffered bytes stay
  // below maxTransfers × maxBodyBytes whatever devices do; no timers involved.
  private readonly transfers: LRUCache<string, Transfer>;

  constructor(private readonly options: Block1Options) {
    this.transfers = boundedCache(options.maxTransfers, { ttl: options.idleTimeoutMs });
  }

  /**
   * @param transferKey identifies the body being uploaded: peer, method and URI (tokens may change per block)
   * @param announcedSize the Size1 option, if the client sent one
   */
  accept(transferKey: string, block: BlockOption, payload: Buffer, announcedSize: number | undefined): Block1Outcome {
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
      transfer = { chunks: [], received: 0 };
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

    transfer.chunks.push(payload);
    transfer.received += payload.length;
    if (block.more) {
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
}
