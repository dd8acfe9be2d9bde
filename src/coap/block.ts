// The Block1/Block2 option value (RFC 7959 §2.2), shared by request-body reassembly and response slicing.
import { encodeUint } from './message.js';

export interface BlockOption {
  readonly num: number;
  readonly more: boolean;
  /** Size exponent: the block holds 2^(szx+4) bytes. 7 is reserved for BERT over TCP. */
  readonly szx: number;
}

export const blockSize = (block: Pick<BlockOption, 'szx'>): number => 1 << (block.szx + 4);

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
