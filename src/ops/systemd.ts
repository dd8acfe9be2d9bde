// The sd_notify protocol (sd_notify(3)) for the systemd unit: Type=notify tells systemd the gateway is
// serving only once it is (READY=1), a STATUS line shows in `systemctl status`, RELOADING=1 / STOPPING=1
// mark a reload and a shutdown, and WATCHDOG=1 pings let systemd restart a gateway whose event loop is stuck.
//
// The messages are AF_UNIX datagrams to $NOTIFY_SOCKET, which Node's dgram cannot send: a tiny native
// function does (native/sd_notify.c, build/Release/sd_notify.node, libc only). Outside systemd
// (NOTIFY_SOCKET unset) everything here does nothing and says nothing.
import { loadNativeAddon } from '../native-addon.js';
import type { Logger } from 'pino';
import type { Gateway } from '../gateway.js';
import { formatAddress } from '../net/udp-socket.js';

export interface SdNotifyBinding {
  /** One datagram to `socketPath` (a path, or "@name" in the abstract namespace); throws with errno's text. */
  notify(socketPath: string, message: string): void;
}

/** Loads build/Release/sd_notify.node (built with the DTLS binding at npm install) once. */
export function loadSdNotifyBinding(): SdNotifyBinding {
  return loadNativeAddon<SdNotifyBinding>('sd_notify', {
    missing: (file, root) => `${file} is missing: run "npm rebuild" in ${root} (it needs python3, make and g++)`,
    unloadable: (file, reason) => `cannot load ${file}: ${reason}; rebuild it with "npm rebuild"`,
  });
}

export interface SystemdNotifierOptions {
  /** Where NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID come from; process.env by default. */
  readonly env?: NodeJS.ProcessEnv;
  /** This process's pid, compared with WATCHDOG_PID. */
  readonly pid?: number;
  /** For tests: the binding to use instead of the native one. */
  readonly binding?: () => SdNotifyBinding;
}

export interface WatchdogOptions {
  /**
   * WATCHDOG=1 is sent only while this returns true, so systemd restarts a gateway that is wedged in a way
   * only it can tell. A blocked event loop needs no callback: the timer then does not fire at all.
   */
  readonly healthy?: () => boolean;
  /** The current STATUS line, polled on each tick and sent when it changed. */
  readonly status?: () => string;
}

/** How often `status` is polled when systemd asked for no watchdog (WatchdogSec unset). */
const STATUS_POLL_MS = 10_000;
/** systemd shows STATUS in one line of `systemctl status`; keep it to what a technician reads. */
const MAX_STATUS_LENGTH = 400;

export class SystemdNotifier {
  private readonly socket: string | undefined;
  private readonly binding: SdNotifyBinding | undefined;
  /** Half of WATCHDOG_USEC in ms: sd_watchdog_enabled(3) recommends pinging at twice the rate. */
  readonly watchdogIntervalMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastStatus: string | undefined;
  private failing = false;

  constructor(
    private readonly log: Pick<Logger, 'warn' | 'info' | 'debug'>,
    options: SystemdNotifierOptions = {},
  ) {
    const env = options.env ?? process.env;
    const socket = env.NOTIFY_SOCKET || undefined;
    this.watchdogIntervalMs = socket === undefined ? undefined : watchdogInterval(env, options.pid ?? process.pid);
    if (socket === undefined) return;
    try {
      this.binding = (options.binding ?? loadSdNotifyBinding)();
      this.socket = socket;
    } catch (error) {
      log.warn(
        { err: error },
        'NOTIFY_SOCKET is set but the sd_notify binding cannot be loaded: systemd will not hear that the gateway ' +
          'is ready (a Type=notify unit then times out starting) nor get watchdog pings',
      );
      this.watchdogIntervalMs = undefined;
    }
  }

  /** Running under systemd (Type=notify) with a working binding. */
  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** Start-up finished, or a reload did: systemd marks the unit active (running). */
  ready(status?: string): void {
    this.send(['READY=1', ...this.statusLine(status)]);
  }

  /** The one-line state shown by `systemctl status`; sent only when it changed. */
  status(text: string): void {
    const line = this.statusLine(text);
    if (line.length > 0) this.send(line);
  }

  /**
   * A reload begins (SIGHUP): systemd shows the unit "reloading" until the next ready(). MONOTONIC_USEC is
   * what Type=notify-reload (systemd 253+) asks for, to match the reply to the request.
   */
  reloading(status = 'reloading the configuration'): void {
    const monotonicUsec = process.hrtime.bigint() / 1000n; // CLOCK_MONOTONIC on Linux (libuv's uv_hrtime)
    this.send(['RELOADING=1', `MONOTONIC_USEC=${monotonicUsec}`, ...this.statusLine(status)]);
  }

  /** A shutdown begins: systemd shows the unit "deactivating" rather than wondering why it goes away. */
  stopping(status = 'stopping: answering requests in progress, then closing'): void {
    this.send(['STOPPING=1', ...this.statusLine(status)]);
  }

  /**
   * Pings the watchdog every WATCHDOG_USEC/2 when systemd asked for one (WatchdogSec=), from an unref'd
   * timer, and keeps STATUS current from `options.status`. Idempotent; stop() ends it.
   */
  startWatchdog(options: WatchdogOptions = {}): void {
    if (!this.enabled || this.timer) return;
    const interval = this.watchdogIntervalMs ?? (options.status ? STATUS_POLL_MS : undefined);
    if (interval === undefined) return;
    const tick = (): void => {
      const lines: string[] = [];
      if (options.status) lines.push(...this.statusLine(options.status()));
      if (this.watchdogIntervalMs !== undefined && (options.healthy?.() ?? true)) lines.push('WATCHDOG=1');
      if (lines.length > 0) this.send(lines);
    };
    this.timer = setInterval(tick, interval);
    this.timer.unref();
    tick();
  }

  /** Clears the watchdog timer; messages may still be sent (stopping(), a final status). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** `STATUS=...`, or nothing when it is unchanged since the last one sent. */
  private statusLine(text: string | undefined): string[] {
    if (text === undefined) return [];
    // One assignment per line in the protocol: a newline in the text would start a bogus one.
    let line = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
    if (line.length > MAX_STATUS_LENGTH) line = `${line.slice(0, MAX_STATUS_LENGTH - 1)}…`;
    if (line === this.lastStatus) return [];
    return [`STATUS=${line}`];
  }

  private send(lines: readonly string[]): void {
    if (!this.socket || !this.binding) return;
    try {
      this.binding.notify(this.socket, lines.join('\n'));
    } catch (error) {
      // Once, not at every watchdog tick: systemd restarting itself (daemon-reexec) makes it fail for a moment.
      if (!this.failing) this.log.warn({ err: error, socket: this.socket }, 'cannot notify systemd');
      this.failing = true;
      return;
    }
    if (this.failing) this.log.info({ socket: this.socket }, 'notifying systemd works again');
    this.failing = false;
    for (const line of lines) if (line.startsWith('STATUS=')) this.lastStatus = line.slice('STATUS='.length);
  }
}

/** WATCHDOG_USEC/2 in ms when it is meant for this process (WATCHDOG_PID unset or ours), else undefined. */
function watchdogInterval(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!env.WATCHDOG_USEC || !Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

/**
 * The STATUS line for a running gateway, e.g.
 * "serving CoAP on udp [::]:5683, DTLS on udp [::]:5684; upstream connected; 12 readings waiting".
 */
export function gatewayStatus(gateway: Pick<Gateway, 'coapAddress' | 'dtlsAddress' | 'upstream' | 'outbox'>): string {
  const listeners = [`CoAP on udp ${formatAddress(gateway.coapAddress)}`];
  if (gateway.dtlsAddress) listeners.push(`DTLS on udp ${formatAddress(gateway.dtlsAddress)}`);
  const upstream = gateway.upstream.stats();
  let link: string;
  if (upstream.connected) link = 'upstream connected';
  else if (upstream.connects === 0) link = `upstream connecting${upstream.lastFailure ? ` (${upstream.lastFailure})` : ''}`;
  else link = `upstream lost, reconnecting${upstream.lastFailure ? ` (${upstream.lastFailure})` : ''}`;
  const waiting = gateway.outbox?.stats().records ?? 0;
  return `serving ${listeners.join(', ')}; ${link}${waiting > 0 ? `; ${waiting} reading${waiting === 1 ? '' : 's'} waiting in the outbox` : ''}`;
}

/**
 * For a start that fails before a logger exists (an invalid configuration): STATUS only, best effort,
 * silent when not under systemd or when the binding is missing.
 */
export function notifyStatusOnce(text: string, env: NodeJS.ProcessEnv = process.env): void {
  const silent = { warn: () => undefined, info: () => undefined, debug: () => undefined };
  new SystemdNotifier(silent, { env }).status(text);
}
