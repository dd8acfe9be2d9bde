// Every part the composition root builds is registered here with its stop function, in the order it was
// built; a failed start and a stop both unwind the list in reverse, so a part always stops after the
// parts that depend on it and nobody writes a clean-up by hand.
import type { Logger } from 'pino';

export class Parts {
  private readonly stops: Array<{ readonly name: string; readonly stop: () => unknown }> = [];

  constructor(private readonly log: Logger) {}

  /** Registers a built part's stop and returns the part, so building and registering read as one line. */
  add<T>(name: string, part: T, stop: (part: T) => unknown): T {
    this.stops.push({ name, stop: () => stop(part) });
    return part;
  }

  /** Registers a stop that belongs to no single object (a listener to remove, a flush). */
  onStop(name: string, stop: () => unknown): void {
    this.stops.push({ name, stop });
  }

  /**
   * Stops every part, last built first, each awaited. A part whose stop fails is logged and the unwinding
   * goes on: one failing part must not keep the outbox or the session store from closing. The first
   * failure is thrown once all have stopped, so a stop that went wrong still ends the process with 1.
   */
  async unwind(): Promise<void> {
    let failure: { readonly error: unknown } | undefined;
    while (this.stops.length > 0) {
      const { name, stop } = this.stops.pop()!;
      try {
        await stop();
      } catch (error) {
        this.log.error({ err: error, part: name }, 'error while stopping a part; stopping the others');
        failure ??= { error };
      }
    }
    if (failure) throw failure.error;
  }
}
