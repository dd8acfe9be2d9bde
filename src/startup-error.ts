// The two ways a start can fail that the CLI turns into exit codes.

/** A start-up failure the technician can act on; the CLI prints its message and exits 1. */
export class StartupError extends Error {}

/**
 * A start refused for what the configuration says, found only at start (OpenSSL refusing dtls.ciphers or
 * a PEM file): like check-config's refusals it exits 2, which the systemd unit does not restart.
 */
export class ConfigurationError extends StartupError {}
