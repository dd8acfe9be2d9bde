// Checking an image against the fw_checksum / fw_checksum_algorithm ThingsBoard assigned with it.
// The digests are Node's (OpenSSL's) and zlib's; MurmurHash3 comes from murmurhash3js-revisited, which
// gives the same values as the Guava functions ThingsBoard uses.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import murmur from 'murmurhash3js-revisited';

/** The algorithms ThingsBoard offers for OTA packages (its ChecksumAlgorithm enum). */
export const CHECKSUM_ALGORITHMS = ['MD5', 'SHA256', 'SHA384', 'SHA512', 'CRC32', 'MURMUR3_32', 'MURMUR3_128'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

/** "SHA256", "sha-256", "Murmur3_128" → the algorithm; anything else → undefined. */
export function parseChecksumAlgorithm(text: string): ChecksumAlgorithm | undefined {
  const normalised = text.trim().toUpperCase().replace(/-/g, '');
  return CHECKSUM_ALGORITHMS.find((name) => name.replace(/-/g, '') === normalised);
}

/**
 * Every text ThingsBoard may have put in fw_checksum for `data`. Digests are lower-case hex. CRC32 is
 * Java's Long.toHexString (no leading zeros) in current versions, Guava's little-endian hex in older ones.
 * MurmurHash3 is Base64 of the hash bytes after Java's lossy `new String(bytes).getBytes()` in current
 * versions, Guava's hex in older ones; plain Base64 is accepted too.
 */
export function computeChecksum(algorithm: ChecksumAlgorithm, data: Uint8Array): string[] {
  switch (algorithm) {
    case 'MD5':
    case 'SHA256':
    case 'SHA384':
    case 'SHA512':
      return [createHash(algorithm.toLowerCase()).update(data).digest('hex')];
    case 'CRC32': {
      const value = crc32(data);
      return [value.toString(16), littleEndian32(value).toString('hex')];
    }
    case 'MURMUR3_32':
      return renderings(littleEndian32(murmur.x86.hash32(data)));
    case 'MURMUR3_128': {
      // The library gives h1 and h2 as big-endian hex; Guava's bytes are each 8-byte word little-endian.
      const words = Buffer.from(murmur.x64.hash128(data), 'hex');
      return renderings(Buffer.concat([words.subarray(0, 8).reverse(), words.subarray(8, 16).reverse()]));
    }
  }
}

/** Whether `expected` (as fw_checksum gives it) is a rendering of `data`'s checksum. */
export function checksumMatches(algorithm: ChecksumAlgorithm, expected: string, data: Uint8Array): boolean {
  const wanted = expected.trim();
  return computeChecksum(algorithm, data).some((rendering) =>
    // Hex renderings compare without regard to case or leading zeros; Base64 ones exactly.
    /^[0-9a-f]+$/.test(rendering) ? /^[0-9a-fA-F]+$/.test(wanted) && stripZeros(wanted.toLowerCase()) === stripZeros(rendering) : wanted === rendering,
  );
}

function renderings(hashBytes: Buffer): string[] {
  // Java's new String(bytes) replaces malformed UTF-8 with U+FFFD, as Node's decoder does.
  const lossy = Buffer.from(hashBytes.toString('utf8'), 'utf8');
  return [hashBytes.toString('hex'), lossy.toString('base64'), hashBytes.toString('base64')];
}

function littleEndian32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value >>> 0);
  return bytes;
}

function stripZeros(hex: string): string {
  return hex.replace(/^0+(?=.)/, '');
}
