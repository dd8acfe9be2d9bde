// What a process has written to storage, from Linux's per-process I/O accounting (/proc/PID/io). Its
// `write_bytes` counts the bytes the process caused to be sent to the block layer: SQLite's pages, WAL
// and checkpoints, log files, everything. That, not the bytes of readings, is what wears an SD card
// (issue 20 measured ~12 KB per 35-byte reading with the outbox always writing).
import { readFileSync } from 'node:fs';

/** `write_bytes` from the text of a /proc/PID/io file; undefined if the line is missing or garbled. */
export function parseWriteBytes(text: string): number | undefined {
  const match = /^write_bytes:\s*(\d+)\s*$/m.exec(text);
  if (!match) return undefined;
  const value = Number(match[1]);
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * Bytes written so far by the process whose io file this is (/proc/self/io, /proc/PID/io); undefined when
 * the file cannot be read: not Linux, a kernel without task I/O accounting, or another user's process
 * (the kernel allows it only to the owner and root).
 */
export function readWrittenBytes(file: string): number | undefined {
  try {
    return parseWriteBytes(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}
