/**
 * Resolves when the callback handed to `arm` is called, or after `timeoutMs`, whichever comes first. The
 * timer ends with it: a stop that waits for work in flight leaves no timer behind.
 */
export function calledOrTimedOut(timeoutMs: number, arm: (called: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    arm(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
