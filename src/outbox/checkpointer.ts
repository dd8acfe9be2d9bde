// Checkpoints of the outbox's WAL on a worker thread with a connection of its own. A checkpoint copies
// the WAL's pages into the database file and syncs both; on the event loop that took 25-55 ms whenever
// the disk was busy, several times a second at 2,000 readings/s, and every device waited. SQLite lets a
// checkpointer run beside the writer in WAL mode, and syncs the file before it lets the writer reuse the
// WAL, so moving it changes nothing about what survives a power cut.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

/** What one checkpoint did (SQLite's wal_checkpoint result), or why it failed. */
export type CheckpointOutcome = { readonly busy: boolean; readonly walFrames: number; readonly checkpointed: number } | { readonly error: string };

// The worker's code travels as a string so the same file serves dist/ and the tests running src/; its
// imports are dynamic so it runs whether the host treats eval'd code as CommonJS or as a module.
const WORKER_SOURCE = `(async () => {
  const { parentPort, workerData } = await import('node:worker_threads');
  const { default: Database } = await import(workerData.sqlite);
  const db = new Database(workerData.path, { timeout: 5000 });
  db.pragma('synchronous = NORMAL'); // a checkpoint syncs the WAL, then the file
  db.pragma('wal_autocheckpoint = 0');
  parentPort.on('message', (message) => {
    if (message === 'close') {
      db.close();
      Atomics.store(workerData.closed, 0, 1);
      Atomics.notify(workerData.closed, 0);
      parentPort.close();
      return;
    }
    try {
      const [result] = db.pragma('wal_checkpoint(PASSIVE)');
      parentPort.postMessage({ busy: result.busy !== 0, walFrames: result.log, checkpointed: result.checkpointed });
    } catch (error) {
      parentPort.postMessage({ error: error.code ?? error.message });
    }
  });
})();`;

const SQLITE_MODULE = pathToFileURL(createRequire(import.meta.url).resolve('better-sqlite3')).href;
/** How long close() waits for a checkpoint under way to finish. */
const CLOSE_WAIT_MS = 10_000;
/** A worker (a V8 isolate of its own, about 7 MB) lives only while there is work: stopped after this long without. */
const DEFAULT_IDLE_MS = 60_000;

interface Thread {
  readonly worker: Worker;
  /** Set to 1 by the worker once its connection is closed. */
  readonly closed: Int32Array;
}

export class Checkpointer {
  private thread: Thread | undefined;
  /** Workers told to close whose connection may still be open. */
  private readonly retiring = new Set<Thread>();
  private waiting: ((outcome: CheckpointOutcome) => void) | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string,
    private readonly idleMs = DEFAULT_IDLE_MS,
  ) {}

  /** Whether a worker is running (from the first checkpoint until idleMs after the last). */
  get running(): boolean {
    return this.thread !== undefined;
  }

  /** Whether a checkpoint is under way (at most one at a time). */
  get busy(): boolean {
    return this.waiting !== undefined;
  }

  /** Starts a checkpoint; `done` hears how it went. Ignored while one is under way. */
  checkpoint(done: (outcome: CheckpointOutcome) => void): void {
    if (this.waiting) return;
    clearTimeout(this.idleTimer);
    this.thread ??= this.spawn();
    this.waiting = done;
    this.thread.worker.ref(); // until it answers
    this.thread.worker.postMessage('checkpoint');
  }

  /**
   * Closes the workers' connections, waiting for a checkpoint under way; synchronous, so the writer's
   * connection can close right after as the last one (which checkpoints and removes the WAL).
   */
  close(): void {
    clearTimeout(this.idleTimer);
    this.retire();
    for (const thread of this.retiring) {
      Atomics.wait(thread.closed, 0, 0, CLOSE_WAIT_MS);
      void thread.worker.terminate();
    }
    this.retiring.clear();
  }

  private spawn(): Thread {
    const closed = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sqlite: SQLITE_MODULE, path: this.path, closed } });
    const thread: Thread = { worker, closed };
    // Idle, it must not keep the process alive.
    worker.unref();
    worker.on('message', (outcome: CheckpointOutcome) => this.settle(outcome));
    worker.on('error', (error) => this.settle({ error: error.message }));
    worker.on('exit', () => {
      this.retiring.delete(thread);
      if (this.thread === thread) {
        this.thread = undefined;
        this.settle({ error: 'the checkpointer stopped' });
      }
    });
    return thread;
  }

  private settle(outcome: CheckpointOutcome): void {
    const done = this.waiting;
    this.waiting = undefined;
    this.thread?.worker.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.retire(), this.idleMs);
    this.idleTimer.unref();
    done?.(outcome);
  }

  private retire(): void {
    const thread = this.thread;
    if (!thread) return;
    this.thread = undefined;
    this.retiring.add(thread);
    thread.worker.postMessage('close');
  }
}
