// Looks inside a SQLite file the gateway left behind, read-only, from a separate node process (so it can
// run inside a test's mount namespace): PRAGMA integrity_check and the row count of every table.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecResult } from './tmpfs-namespace.js';

const REPO = join(import.meta.dirname, '../..');

// Resolved from the repository explicitly: entering a mount namespace resets the working directory. When
// the file cannot be opened where it is (a read-only connection still needs its -shm, which a full disk
// cannot hold), it is checked on a copy of the database and its WAL in `scratch`.
const SCRIPT = `
const fs = require('fs');
const path = require('path');
const Database = require('module').createRequire(process.argv[2] + '/')('better-sqlite3');
const [file, , scratch] = process.argv.slice(1);
function inspect(target) {
  const db = new Database(target, { readonly: true, fileMustExist: true });
  try {
    const integrity = db.pragma('integrity_check').map((row) => row.integrity_check);
    const tables = db.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'").all().map((row) => row.name);
    const rows = {};
    for (const table of tables) rows[table] = db.prepare('select count(*) as c from "' + table.replace(/"/g, '""') + '"').get().c;
    return { integrity, rows, journalMode: db.pragma('journal_mode', { simple: true }), pages: db.pragma('page_count', { simple: true }), freePages: db.pragma('freelist_count', { simple: true }) };
  } finally {
    db.close();
  }
}
const sizes = {};
for (const suffix of ['', '-wal', '-shm']) if (fs.existsSync(file + suffix)) sizes['file' + suffix] = fs.statSync(file + suffix).size;
const hadShm = fs.existsSync(file + '-shm');
let report;
try {
  report = { ...inspect(file), openedInPlace: true };
} catch (error) {
  // Leave the directory as it was: a failed open may have left a stub -shm behind.
  if (!hadShm) fs.rmSync(file + '-shm', { force: true });
  const copy = path.join(scratch, path.basename(file));
  fs.copyFileSync(file, copy);
  if (fs.existsSync(file + '-wal')) fs.copyFileSync(file + '-wal', copy + '-wal');
  report = { ...inspect(copy), openedInPlace: false, inPlaceError: error.code || error.message };
}
process.stdout.write(JSON.stringify({ ...report, sizes }));
`;

export interface SqliteReport {
  /** ["ok"] when the database is sound. */
  readonly integrity: string[];
  readonly rows: Record<string, number>;
  readonly journalMode: string;
  readonly pages: number;
  readonly freePages: number;
  /** False when it had to be checked on a copy; inPlaceError says why. */
  readonly openedInPlace: boolean;
  readonly inPlaceError?: string;
  /** Bytes of the database, its -wal and -shm as found. */
  readonly sizes: Record<string, number>;
}

type Runner = (argv: readonly string[], options: { cwd: string }) => Promise<ExecResult>;

const runHere: Runner = (argv, options) =>
  new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { cwd: options.cwd, timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? 1 : 0, stdout, stderr });
    });
  });

/** Opens `file` read-only and reports on it; `run` runs the checker elsewhere (e.g. TmpfsNamespace.exec). */
export async function inspectSqlite(file: string, run: Runner = runHere): Promise<SqliteReport> {
  const scratch = mkdtempSync(join(tmpdir(), 'coap2mqtt-sqlite-check-'));
  try {
    const result = await run([process.execPath, '-e', SCRIPT, file, REPO, scratch], { cwd: REPO });
    if (result.code !== 0) throw new Error(`cannot inspect ${file}: ${result.stderr.trim() || result.stdout.trim()}`);
    return JSON.parse(result.stdout) as SqliteReport;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
