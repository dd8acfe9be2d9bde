// Block1 (RFC 7959): request bodies larger than one datagram, reassembled before the request is handled.
import { LRUCache } from 'lru-cache';
import { ResponseCode, type CodeByte } from './codes.js';
import { encodeUint } from './message.js';

export interface BlockOption {
  readonly num: number;
  readonly more: boolean;
  /** Size exponent: the block holds 2^(szx+4) bytes. 7 is reserved for BERT over TCP. */
  readonly szx: number;
}

export const blockSize = (block: BlockOption): number => 1 << (block.szx + 4);

/** undefined when the value is longer than 3 bytes or uses the reserved size exponent 7. */
export function decodeBlock(value: Buffer): BlockOption | undefined {
  if (value.length > 3) return undefined;
  let raw = 0;
  for (const byte of value) raw = (raw << 8) | byte;
  const szx = raw & 7;
  if (szx === 7) return undefined;
  return { num: raw >> 4, more: (raw & 8) !== 0, szx };
}

export function encodeBlock(block: BlockOption): Buffer {
  return encodeUint((block.num << 4) | (block.more ? 8 : 0) | block.szx);
}

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
    this.transfers = new LRUCache({ max: options.maxTransfers, ttl: options.idleTimeoutMs });
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
