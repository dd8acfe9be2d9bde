// What the bridge needs from the upstream connection, and nothing more (tests and later the durable
// outbox can stand in for it).
export interface Upstream {
  readonly connected: boolean;
  /** Resolves on the broker's acknowledgement; rejects with UpstreamUnavailableError otherwise. */
  publish(topic: string, payload: string): Promise<void>;
  onConnected(listener: () => void): void;
  retryAfterSeconds(): number;
}
