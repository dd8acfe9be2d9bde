// `coap2mqtt doctor`: the checklist a technician runs on the box. Each check is one line a person can act
// on: what is wrong, which key or file, what to do. It changes nothing: it does not create the state
// directory, takes no lock, writes no file, and logs in to the broker under a client id of its own, so
// the running gateway's session is never evicted.
import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { accessSync, constants, readFileSync, readdirSync, statSync, statfsSync, type Stats } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { hostname, userInfo } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import tls from 'node:tls';
import mqtt, { type IClientOptions } from 'mqtt';
import type { Output } from '../config/check-config.js';
import type { GatewayConfig, LoadResult, UpstreamConfig } from '../config/load.js';
import { redactUrl } from '../log.js';
import { mqttClientOptions } from '../upstream/connection.js';
import { startWriteSample, storageFinding, type StorageCheckInput } from './doctor-storage.js';
import { inspectOutbox, type OutboxInspection } from '../outbox/inspect.js';
import { findRunningGateway } from './running-gateway.js';
import { SystemAccounts, type SystemUser } from './system-user.js';
import { bytes, days, duration, isoDate, isoMinute } from './words.js';

export type Status = 'ok' | 'warn' | 'FAIL';

export interface Finding {
  readonly status: Status;
  readonly check: string;
  readonly message: string;
}

export interface DoctorOptions {
  /** One JSON document on stdout instead of lines. */
  readonly json: boolean;
}

/** The user the packaged systemd unit runs the gateway as. */
const SERVICE_USER = 'coap2mqtt';
/** No coap2mqtt release predates this: a clock before it is certainly wrong. */
const CLOCK_FLOOR = Date.UTC(2026, 0, 1);
const DAY_MS = 86_400_000;
/** A certificate expiring sooner than this is worth renewing now. */
const EXPIRY_WARNING_MS = 30 * DAY_MS;
/** Outbox records stamped further ahead than this mean the clock went back. */
const FUTURE_TOLERANCE_MS = 5 * 60_000;
const FUTURE_FAIL_MS = 60 * 60_000;
/** Readings waiting this long while the gateway runs mean it cannot deliver them. */
const OUTBOX_STUCK_MS = 15 * 60_000;
const LOCAL_PROBE_TIMEOUT_MS = 3000;

/** Runs every check, prints them, and returns the exit status: 0 without FAIL, 1 with. */
export async function runDoctor(
  file: string | undefined,
  result: LoadResult & { ok: true },
  options: DoctorOptions,
  output: Output,
): Promise<number> {
  const report = new Report(options.json ? undefined : (finding) => output.out(formatFinding(finding)));
  const config = result.config;
  const stateDir = resolve(config.state.dir);
  const runningPid = findRunningGateway(stateDir);
  const storage: StorageCheckInput = {
    stateDir,
    outbox: config.outbox,
    runningPid,
    metrics: config.http.enabled ? { host: config.http.host, port: config.http.port } : undefined,
  };
  // Sampled while the other checks run: the wait costs no time of its own.
  const writeSample = startWriteSample(storage);
  const context: Context = {
    config,
    stateDir,
    runningPid,
    // Whose access matters is the service's, whoever runs doctor (root's own access proves nothing).
    service: accounts.user(SERVICE_USER),
    outbox: config.outbox.enabled ? inspectOutbox(join(stateDir, 'outbox.sqlite'), { createdAfter: Date.now() + FUTURE_TOLERANCE_MS }) : undefined,
  };

  checkConfiguration(report, file, result);
  await checkUpstream(report, context);
  checkKeyMaterial(report, context);
  await checkClock(report, context);
  checkStateDir(report, context);
  const wear = storageFinding(storage, await writeSample);
  if (wear) report.add(wear.status, 'storage', wear.message);
  await checkPorts(report, context);

  const counts = report.counts();
  const summary = summaryLine(counts);
  if (options.json) {
    output.out(
      JSON.stringify(
        {
          ok: counts.FAIL === 0,
          failures: counts.FAIL,
          warnings: counts.warn,
          passed: counts.ok,
          summary,
          checks: report.findings.map(({ status, check, message }) => ({ status: status.toLowerCase(), check, message })),
        },
        null,
        2,
      ),
    );
  } else {
    output.out('');
    output.out(summary);
  }
  return counts.FAIL === 0 ? 0 : 1;
}

export function formatFinding({ status, check, message }: Finding): string {
  return `${status.padEnd(4)}  ${check}: ${message}`;
}

function summaryLine(counts: Record<Status, number>): string {
  const total = counts.ok + counts.warn + counts.FAIL;
  if (counts.FAIL > 0) {
    return `${counts.FAIL} FAIL, ${counts.warn} warn, ${counts.ok} ok: the gateway will not work as configured until the FAIL lines are fixed`;
  }
  if (counts.warn > 0) return `0 FAIL, ${counts.warn} warn, ${counts.ok} ok: the gateway can run; the warnings are worth a look`;
  return `all ${total} checks ok`;
}

class Report {
  readonly findings: Finding[] = [];

  constructor(private readonly emit: ((finding: Finding) => void) | undefined) {}

  add(status: Status, check: string, message: string): void {
    const finding = { status, check, message };
    this.findings.push(finding);
    this.emit?.(finding);
  }

  counts(): Record<Status, number> {
    const counts: Record<Status, number> = { ok: 0, warn: 0, FAIL: 0 };
    for (const { status } of this.findings) counts[status]++;
    return counts;
  }
}

interface Context {
  readonly config: GatewayConfig;
  /** Absolute, as the gateway resolves it from the current directory. */
  readonly stateDir: string;
  /** A coap2mqtt running on this state directory, from its pid file. */
  readonly runningPid: number | undefined;
  /** The service's user, when it exists on this box: whose access matters. */
  readonly service: ServiceUser | undefined;
  readonly outbox: OutboxInspection | undefined;
}

// ---------------------------------------------------------------------------------------------------
// 1. Configuration

function checkConfiguration(report: Report, file: string | undefined, result: LoadResult & { ok: true }): void {
  const devices = result.config.devices.length;
  const source = file ?? 'no file given (built-in defaults and COAP2MQTT_* variables)';
  report.add('ok', 'configuration', `${source}: valid, ${devices} device${devices === 1 ? '' : 's'}`);
  for (const warning of result.warnings) report.add('warn', 'configuration', warning);
}

// ---------------------------------------------------------------------------------------------------
// 2. Upstream broker

async function checkUpstream(report: Report, context: Context): Promise<void> {
  const { upstream } = context.config;
  if (upstream.url === '') {
    await checkEmbeddedBroker(report, context);
    return;
  }
  const url = new URL(upstream.url);
  const secure = url.protocol === 'mqtts:';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port) || (secure ? 8883 : 1883);
  const shown = redactUrl(`${url.protocol}//${url.host}${url.port ? '' : `:${port}`}`);

  let address: string;
  try {
    address = (await lookup(host)).address;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOTFOUND'
        ? `the host name "${host}" does not exist (check upstream.url, and the box's DNS server in /etc/resolv.conf)`
        : code === 'EAI_AGAIN'
          ? `no DNS answer for "${host}" (is the box on the network? is a DNS server configured?)`
          : `cannot resolve "${host}": ${(error as Error).message}`;
    report.add('FAIL', 'upstream', `cannot reach ${shown}: ${why}`);
    return;
  }
  const target = net.isIP(host) === 0 ? `${shown} (${address})` : shown;

  const reach = secure ? await tlsProbe(host, port, upstream) : await tcpProbe(host, port, upstream.connectTimeoutMs);
  if ('problem' in reach) {
    report.add('FAIL', 'upstream', `cannot ${reach.stage === 'tls' ? 'set up TLS with' : 'reach'} ${target}: ${reach.problem}`);
    return;
  }

  const baseId = upstream.clientId || storedClientId(context.stateDir) || `coap2mqtt-${hostname().replace(/[^\w.-]/g, '').slice(0, 40)}`;
  const doctorId = `${baseId}-doctor`;
  const options = mqttClientOptions({ ...upstream, clientId: doctorId });
  let outcome = await mqttProbe(upstream.url, options, upstream.connectTimeoutMs);
  let loggedInAs = doctorId;
  // ThingsBoard "MQTT Basic" credentials may pin the client id, and then only the exact one logs in. Trying
  // it would evict the running gateway's session: only when none runs here.
  const pinnedId = upstream.username !== '' && upstream.clientId !== '';
  if ('refused' in outcome && (outcome.refused === 4 || outcome.refused === 5) && pinnedId) {
    if (context.runningPid !== undefined) {
      report.add(
        'warn',
        'upstream',
        `${target} refused doctor's test login as "${doctorId}" (${CONNACK_WORDS[outcome.refused]}); with MQTT Basic credentials that pin the client id to "${upstream.clientId}" that is expected, and doctor will not log in as "${upstream.clientId}" while the gateway (pid ${context.runningPid}) holds that session: see the gateway's own status under http.port below, or its log`,
      );
      return;
    }
    outcome = await mqttProbe(upstream.url, { ...options, clientId: upstream.clientId }, upstream.connectTimeoutMs);
    loggedInAs = upstream.clientId;
  }
  if ('refused' in outcome) {
    report.add('FAIL', 'upstream', `${target} refused the login: ${describeRefusal(outcome.refused, upstream, loggedInAs)}`);
    return;
  }
  if ('problem' in outcome) {
    report.add('FAIL', 'upstream', `${target}: ${outcome.problem}`);
    return;
  }
  const tlsNote = 'peer' in reach && reach.peer ? `; its TLS certificate (${certName(reach.peer)}) is trusted and valid until ${isoDate(Date.parse(reach.peer.valid_to))}` : '';
  report.add('ok', 'upstream', `connected to ${target} and logged in with ${credentialsName(upstream)} as client "${loggedInAs}" in ${outcome.ms} ms${tlsNote}`);
}

/** What the gateway authenticates with, by config key: never the secret itself. */
function credentialsName(upstream: UpstreamConfig): string {
  if (upstream.accessToken !== '') return 'upstream.accessToken';
  if (upstream.username !== '') return 'upstream.username / upstream.password';
  if (upstream.cert !== '') return 'the client certificate upstream.cert';
  return 'no credentials';
}

const CONNACK_WORDS: Readonly<Record<number, string>> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

function describeRefusal(code: number, upstream: UpstreamConfig, clientId: string): string {
  const words = CONNACK_WORDS[code] ?? `return code ${code}`;
  switch (code) {
    case 1:
      return `${words}: the broker does not speak MQTT 3.1.1 here; is upstream.url ThingsBoard's MQTT port?`;
    case 2:
      return `${words}: the broker does not accept the client id "${clientId}"${upstream.clientId ? '; check upstream.clientId' : ''}`;
    case 3:
      return `${words}: the broker is up but its MQTT service is not; ThingsBoard may still be starting, run doctor again in a minute`;
    case 4:
    case 5:
      if (upstream.accessToken !== '') {
        return `${words}: upstream.accessToken is wrong, or not the token of a gateway device; in ThingsBoard open the gateway device, "Copy access token", and check that "Is gateway" is ticked`;
      }
      if (upstream.username !== '') {
        return `${words}: upstream.username / upstream.password do not match the device's "MQTT Basic" credentials in ThingsBoard (client id, user name and password must all match)`;
      }
      if (upstream.cert !== '') return `${words}: the broker does not take the client certificate upstream.cert as a device's credentials`;
      return `${words}: the broker wants credentials; set upstream.accessToken to the gateway device's access token`;
    default:
      return words;
  }
}

type Reach =
  | { readonly stage: 'tcp' | 'tls'; readonly problem: string }
  | { readonly stage: 'tcp' }
  | { readonly stage: 'tls'; readonly peer: tls.PeerCertificate | undefined };

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<Reach> {
  return new Promise((done) => {
    const socket = net.connect({ host, port });
    let settled = false;
    const finish = (reach: Reach): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(reach);
    };
    const timer = setTimeout(() => finish({ stage: 'tcp', problem: timeoutProblem(timeoutMs) }), timeoutMs);
    socket.once('connect', () => finish({ stage: 'tcp' }));
    // `on`, not `once`: a second error after the first must not go unhandled.
    socket.on('error', (error) => finish({ stage: 'tcp', problem: describeSocketError(error) }));
  });
}

/**
 * TCP and the TLS handshake, with the gateway's CA and client certificate but without rejecting the
 * broker's certificate, so that what is wrong with it can be said precisely.
 */
function tlsProbe(host: string, port: number, upstream: UpstreamConfig): Promise<Reach> {
  return new Promise((done) => {
    let socket: tls.TLSSocket;
    try {
      socket = tls.connect({
        host,
        port,
        servername: net.isIP(host) === 0 ? host : undefined,
        ca: upstream.ca ? readFileSync(upstream.ca) : undefined,
        cert: upstream.cert ? readFileSync(upstream.cert) : undefined,
        key: upstream.key ? readFileSync(upstream.key) : undefined,
        rejectUnauthorized: false,
      });
    } catch (error) {
      done({ stage: 'tls', problem: `cannot use upstream.ca / upstream.cert / upstream.key: ${(error as Error).message} (see their lines below)` });
      return;
    }
    let connected = false;
    let settled = false;
    const finish = (reach: Reach): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(reach);
    };
    const noHandshake = `no TLS handshake within ${upstream.connectTimeoutMs} ms (upstream.connectTimeoutMs): does this port speak TLS?`;
    const timer = setTimeout(
      () => finish(connected ? { stage: 'tls', problem: noHandshake } : { stage: 'tcp', problem: timeoutProblem(upstream.connectTimeoutMs) }),
      upstream.connectTimeoutMs,
    );
    socket.once('connect', () => (connected = true));
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      // A code such as "CERT_HAS_EXPIRED" (typed as an Error, but a string at run time).
      const refusal = socket.authorizationError as unknown as string | NodeJS.ErrnoException | null | undefined;
      const code = refusal === null || refusal === undefined ? undefined : typeof refusal === 'string' ? refusal : (refusal.code ?? refusal.message);
      if (code !== undefined) {
        finish({ stage: 'tls', problem: describeCertificateRefusal(code, peer, host, upstream) });
        return;
      }
      if (tls.checkServerIdentity(host, peer)) {
        finish({ stage: 'tls', problem: describeCertificateRefusal('ERR_TLS_CERT_ALTNAME_INVALID', peer, host, upstream) });
        return;
      }
      finish({ stage: 'tls', peer: peer && peer.valid_to ? peer : undefined });
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!connected) finish({ stage: 'tcp', problem: describeSocketError(error) });
      else finish({ stage: 'tls', problem: describeTlsError(error) });
    });
  });
}

function describeCertificateRefusal(code: string, peer: tls.PeerCertificate, host: string, upstream: UpstreamConfig): string {
  const issuer = peer.issuer?.CN ?? peer.issuer?.O ?? 'unknown';
  switch (code) {
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the broker's certificate is not for "${host}" (it names ${peer.subjectaltname || `CN=${peer.subject?.CN ?? '?'}`}): put one of those names in upstream.url`;
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'CERT_UNTRUSTED':
      return upstream.ca
        ? `the broker's certificate (issued by "${issuer}") does not chain to upstream.ca (${upstream.ca}): put the CA certificate that signed it in that file`
        : `the broker's certificate (issued by "${issuer}") is not trusted: set upstream.ca to the CA certificate (PEM) that signed it`;
    case 'CERT_HAS_EXPIRED':
      return `the broker's certificate expired on ${isoDate(Date.parse(peer.valid_to))}: if that date has really passed the broker needs a new certificate, otherwise this box's clock is wrong (see the clock line)`;
    case 'CERT_NOT_YET_VALID':
      return `the broker's certificate is valid only from ${isoDate(Date.parse(peer.valid_from))}: this box's clock is probably behind (see the clock line)`;
    default:
      return `the broker's certificate is refused (${code})`;
  }
}

function describeTlsError(error: NodeJS.ErrnoException): string {
  const message = error.message;
  if (error.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/.test(message)) {
    return "this port does not speak TLS: use mqtt:// for it, or the broker's TLS port (usually 8883) with mqtts://";
  }
  const alert = /alert ([a-z ]+)/i.exec(message)?.[1]?.trim();
  if (alert) {
    return `the broker ended the TLS handshake (${alert}): it probably wants a client certificate it trusts (upstream.cert / upstream.key)`;
  }
  if (error.code === 'ECONNRESET' || /socket disconnected/i.test(message)) {
    return 'the broker closed the connection during the TLS handshake: does this port speak TLS? does the broker want a client certificate (upstream.cert / upstream.key)?';
  }
  return message;
}

function timeoutProblem(timeoutMs: number): string {
  return `no answer within ${timeoutMs} ms (upstream.connectTimeoutMs): a firewall dropping the traffic, or a wrong address or port in upstream.url`;
}

function describeSocketError(error: NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] }): string {
  // With several addresses tried (IPv6 and IPv4), Node reports them together.
  const code = error.code ?? error.errors?.[0]?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (is the broker running? is upstream.url right?)';
    case 'ECONNRESET':
      return 'the connection was reset by the other end';
    case 'EHOSTUNREACH':
      return 'no route to the host (is the box on the network? is the address right?)';
    case 'ENETUNREACH':
      return 'network unreachable (is the box connected? does it have a default route?)';
    case 'ETIMEDOUT':
      return 'the connection timed out (a firewall dropping the traffic, or a wrong address)';
    default:
      return error.message || String(code);
  }
}

const TLS_ERROR = /^(ERR_SSL|ERR_TLS|EPROTO|CERT_|UNABLE_|DEPTH_|SELF_SIGNED)/;

type MqttOutcome = { readonly ms: number } | { readonly refused: number } | { readonly problem: string };

/** One MQTT CONNECT; disconnects right after the CONNACK. */
function mqttProbe(url: string, options: IClientOptions, timeoutMs: number): Promise<MqttOutcome> {
  const started = Date.now();
  return new Promise((done) => {
    const client = mqtt.connect(url, { ...options, clean: true, reconnectPeriod: 0, connectTimeout: timeoutMs });
    let settled = false;
    const finish = (outcome: MqttOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!('ms' in outcome)) {
        client.end(true);
        done(outcome);
        return;
      }
      // A clean DISCONNECT right after the CONNACK, sent before going on.
      const force = setTimeout(() => client.end(true, {}, () => done(outcome)), 1000);
      client.end(false, {}, () => {
        clearTimeout(force);
        done(outcome);
      });
    };
    const noAnswer = `the broker took the connection but did not answer the MQTT CONNECT within ${timeoutMs} ms (upstream.connectTimeoutMs): is upstream.url an MQTT port (TLS ports need mqtts://)?`;
    const timer = setTimeout(() => finish({ problem: noAnswer }), timeoutMs + 1000);
    client.once('connect', () => finish({ ms: Date.now() - started }));
    client.on('error', (error: Error & { code?: string | number }) => {
      if (typeof error.code === 'number') finish({ refused: error.code });
      else if (error.message === 'connack timeout') finish({ problem: noAnswer });
      else if (typeof error.code === 'string' && TLS_ERROR.test(error.code)) finish({ problem: `TLS: ${describeTlsError(error as NodeJS.ErrnoException)}` });
      else if (error.code === undefined) finish({ problem: `the answer is not MQTT (${error.message}): is upstream.url the broker's MQTT port?` });
      else finish({ problem: describeSocketError(error as NodeJS.ErrnoException) });
    });
    client.once('close', () => finish({ problem: 'the broker closed the connection without answering the MQTT CONNECT' }));
  });
}

/** The client id the gateway keeps in the state directory, if it made one; doctor never creates it. */
function storedClientId(stateDir: string): string | undefined {
  try {
    return readFileSync(join(stateDir, 'mqtt-client-id'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

async function checkEmbeddedBroker(report: Report, context: Context): Promise<void> {
  const { host, port } = context.config.embeddedBroker;
  const prefix = 'no ThingsBoard configured (upstream.url is empty): readings go to the embedded broker';
  if (port === 0) {
    report.add('ok', 'upstream', `${prefix}, on a free port chosen at start`);
    return;
  }
  const address = formatAddress(host, port);
  const error = await tryListenTcp(host, port);
  if (!error) {
    report.add('ok', 'upstream', `${prefix} on ${address}, which is free: the gateway is not running`);
    return;
  }
  if (error.code === 'EADDRNOTAVAIL') {
    report.add('FAIL', 'upstream', `embeddedBroker.host "${host}" is not an address of this machine`);
    return;
  }
  if (error.code === 'EACCES') {
    report.add('warn', 'upstream', `this user may not listen on TCP ${address} (ports below 1024 need CAP_NET_BIND_SERVICE); choose embeddedBroker.port 1024 or above, or run doctor with sudo`);
    return;
  }
  if (error.code !== 'EADDRINUSE') {
    report.add('FAIL', 'upstream', `cannot listen on TCP ${address} for the embedded broker: ${error.message}`);
    return;
  }
  const hostInUrl = host.includes(':') ? `[${host}]` : host;
  const outcome = await mqttProbe(
    `mqtt://${hostInUrl}:${port}`,
    { clientId: `coap2mqtt-doctor-${randomBytes(4).toString('hex')}`, protocolVersion: 4 },
    LOCAL_PROBE_TIMEOUT_MS,
  );
  if ('ms' in outcome || 'refused' in outcome) {
    if (context.runningPid !== undefined) {
      report.add('ok', 'upstream', `${prefix} on ${address}: in use and accepting MQTT, the running gateway (pid ${context.runningPid})`);
    } else {
      report.add(
        'warn',
        'upstream',
        `${prefix} on ${address}: an MQTT broker already listens there but no coap2mqtt runs with this state.dir; if that is not this gateway (systemctl status coap2mqtt), another broker (mosquitto?) holds the port and the gateway cannot start: stop it or change embeddedBroker.port`,
      );
    }
    return;
  }
  report.add(
    'FAIL',
    'upstream',
    `${address} (embeddedBroker.port) is taken by a program that does not speak MQTT: the gateway cannot start its embedded broker there; stop it (sudo ss -tlpn 'sport = :${port}' names it) or change embeddedBroker.port`,
  );
}

// ---------------------------------------------------------------------------------------------------
// 3. Certificates and keys

function checkKeyMaterial(report: Report, context: Context): void {
  const { dtls, upstream } = context.config;
  if (dtls.enabled || dtls.cert || dtls.key || dtls.ca) {
    checkCertificateSet(report, context, {
      prefix: 'dtls',
      cert: dtls.cert,
      key: dtls.key,
      ca: dtls.ca,
      inUse: dtls.enabled,
      unused: 'dtls.enabled is false, so it is not used now',
      apply: 'then sudo systemctl reload coap2mqtt',
    });
  }
  if (upstream.url !== '' && (upstream.cert || upstream.key || upstream.ca)) {
    checkCertificateSet(report, context, {
      prefix: 'upstream',
      cert: upstream.cert,
      key: upstream.key,
      ca: upstream.ca,
      inUse: upstream.url.startsWith('mqtts:'),
      unused: 'upstream.url is not mqtts://, so it is not used',
      apply: 'then sudo systemctl restart coap2mqtt',
    });
  }
}

interface CertificateSet {
  readonly prefix: 'dtls' | 'upstream';
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly inUse: boolean;
  /** Why a problem does not matter now. */
  readonly unused: string;
  /** How a replaced file takes effect. */
  readonly apply: string;
}

function checkCertificateSet(report: Report, context: Context, set: CertificateSet): void {
  // Problems with files the gateway does not use now are only warnings.
  const add = (status: Status, check: string, message: string): void =>
    status === 'FAIL' && !set.inUse ? report.add('warn', check, `${message} (${set.unused})`) : report.add(status, check, message);
  /** The checks of one file: a file the service cannot read gets that FAIL instead of its ok line. */
  const forFile = (check: string, path: string): ((status: Status, message: string) => void) => {
    const unreadable = serviceCannotRead(context, path);
    if (unreadable) add('FAIL', check, unreadable);
    return (status, message) => {
      if (!(status === 'ok' && unreadable)) add(status, check, message);
    };
  };
  let leaf: X509Certificate | undefined;
  if (set.cert) {
    const note = forFile(`${set.prefix}.cert`, set.cert);
    const certs = readCertificates(set.cert);
    if ('problem' in certs) note('FAIL', `${set.cert}: ${certs.problem}`);
    else {
      leaf = certs.list[0]!;
      const validity = describeValidity(leaf, set.apply);
      note(validity.status, `${set.cert} (${subjectName(leaf)}) ${validity.text}`);
      for (const extra of certs.list.slice(1)) {
        const chained = describeValidity(extra, set.apply);
        if (chained.status !== 'ok') note(chained.status, `${set.cert}: the chain certificate ${subjectName(extra)} ${chained.text}`);
      }
    }
  }
  if (set.key) {
    const note = forFile(`${set.prefix}.key`, set.key);
    const key = readPrivateKey(set.key);
    if ('problem' in key) note('FAIL', `${set.key}: ${key.problem}`);
    else if (leaf && !leaf.checkPrivateKey(key.key)) {
      note('FAIL', `${set.key} does not belong to ${set.prefix}.cert (${set.cert}): the certificate was made for another key; use the key it was made with, or make a new certificate for this key`);
    } else {
      const stats = statSync(set.key);
      const exposure = keyExposure(stats, context.service);
      if (exposure) note('warn', `${set.key}: ${exposure}: sudo chown root:${SERVICE_USER} ${set.key} && sudo chmod 640 ${set.key}`);
      else note('ok', `${set.key}: an ${key.key.asymmetricKeyType?.toUpperCase() ?? ''} private key${leaf ? ` matching ${set.prefix}.cert` : ''}, mode ${modeString(stats)}`);
    }
  }
  if (set.ca) {
    const note = forFile(`${set.prefix}.ca`, set.ca);
    const certs = readCertificates(set.ca);
    if ('problem' in certs) note('FAIL', `${set.ca}: ${certs.problem}`);
    else {
      const judged = certs.list.map((cert) => ({ cert, validity: describeValidity(cert, set.apply) }));
      if (judged.every(({ validity }) => validity.status === 'FAIL')) {
        const { cert, validity } = judged[0]!;
        note('FAIL', `${set.ca} (${subjectName(cert)}) ${validity.text}`);
      } else {
        // A bundle may hold an expired root nobody uses any more: only when all are unusable is it a failure.
        for (const { cert, validity } of judged) {
          if (validity.status !== 'ok') note('warn', `${set.ca}: the CA certificate ${subjectName(cert)} ${validity.text}`);
        }
        const valid = judged.filter(({ validity }) => validity.status === 'ok');
        if (valid.length > 0) {
          const names = valid.slice(0, 3).map(({ cert }) => subjectName(cert)).join(', ') + (valid.length > 3 ? `, and ${valid.length - 3} more` : '');
          const until = Math.min(...valid.map(({ cert }) => Date.parse(cert.validTo)));
          note('ok', `${set.ca}: ${valid.length} valid CA certificate${valid.length === 1 ? '' : 's'} (${names}), the first to expire on ${isoDate(until)}`);
        }
      }
    }
  }
}

function readCertificates(path: string): { readonly list: X509Certificate[] } | { readonly problem: string } {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (error) {
    return { problem: `cannot read it: ${describeFsError(error)}` };
  }
  const text = data.toString('latin1');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) {
    try {
      new X509Certificate(data);
      return { problem: `a DER (binary) certificate; the gateway reads PEM: openssl x509 -inform der -in ${path} -out ${path}.pem` };
    } catch {
      return { problem: 'holds no certificate (PEM, "-----BEGIN CERTIFICATE-----")' };
    }
  }
  const list: X509Certificate[] = [];
  for (const [index, block] of blocks.entries()) {
    try {
      list.push(new X509Certificate(block));
    } catch (error) {
      return { problem: `certificate ${index + 1} in it does not parse: ${(error as Error).message}` };
    }
  }
  return { list };
}

function readPrivateKey(path: string): { readonly key: KeyObject } | { readonly problem: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    return { problem: `cannot read it: ${describeFsError(error)}` };
  }
  if (/ENCRYPTED/.test(text)) {
    return { problem: `the key is protected by a passphrase, which the gateway cannot enter: openssl pkey -in ${path} -out ${path}.plain (then use that file)` };
  }
  try {
    return { key: createPrivateKey(text) };
  } catch {
    // OpenSSL's message may quote the file's content: say only what it is not.
    return { problem: 'not a private key OpenSSL can read (PEM, "-----BEGIN PRIVATE KEY-----" or "-----BEGIN EC PRIVATE KEY-----")' };
  }
}

function describeValidity(cert: X509Certificate, apply: string): { status: Status; text: string } {
  const now = Date.now();
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (now < from) return { status: 'FAIL', text: `is valid only from ${isoDate(from)}: is this box's clock right? (see the clock line)` };
  if (now > to) return { status: 'FAIL', text: `expired on ${isoDate(to)}, ${days(now - to)} ago: renew it, ${apply}` };
  if (to - now < EXPIRY_WARNING_MS) return { status: 'warn', text: `expires on ${isoDate(to)}, in ${days(to - now)}: renew it soon, ${apply}` };
  return { status: 'ok', text: `is valid until ${isoDate(to)}` };
}

function subjectName(cert: X509Certificate): string {
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
  return cn ? `CN=${cn}` : cert.subject.split('\n')[0] ?? 'no subject';
}

function certName(peer: tls.PeerCertificate): string {
  return peer.subject?.CN ? `CN=${peer.subject.CN}` : 'no CN';
}

/** Who besides the owner and the service can read a private key, in words; undefined when nobody. */
function keyExposure(stats: Stats, service: ServiceUser | undefined): string | undefined {
  if ((stats.mode & 0o004) !== 0) return `readable by every user on this box (mode ${modeString(stats)})`;
  if ((stats.mode & 0o040) !== 0 && stats.gid !== 0) {
    const group = groupName(stats.gid);
    const serviceGroup = service === undefined ? group === SERVICE_USER : service.gid === stats.gid;
    if (!serviceGroup) return `readable by the group ${group ?? stats.gid} (mode ${modeString(stats)}), not only by the service's`;
  }
  return undefined;
}

/** Why the service's user cannot read a file it needs, or undefined (it can, or there is no such user). */
function serviceCannotRead(context: Context, path: string): string | undefined {
  const service = context.service;
  if (!service) return undefined;
  let stats: Stats;
  try {
    stats = statSync(path);
  } catch {
    return undefined;
  }
  const closed = closedDirectory(service, path);
  if (closed) {
    return `the service's user ${service.name} cannot reach ${path}: it may not enter ${closed.dir} (owner ${userName(closed.stats.uid) ?? closed.stats.uid}, group ${groupName(closed.stats.gid) ?? closed.stats.gid}, mode ${modeString(closed.stats)}): sudo chgrp ${service.name} ${closed.dir} && sudo chmod g+x ${closed.dir}`;
  }
  if (canAccess(service, stats, 'r')) return undefined;
  return `the service's user ${service.name} cannot read ${path} (owner ${userName(stats.uid) ?? stats.uid}, group ${groupName(stats.gid) ?? stats.gid}, mode ${modeString(stats)}): sudo chown root:${service.name} ${path} && sudo chmod 640 ${path}`;
}

// ---------------------------------------------------------------------------------------------------
// 4. Clock

async function checkClock(report: Report, context: Context): Promise<void> {
  const now = Date.now();
  const shown = isoMinute(now);
  const installed = installationTime();
  if (now < CLOCK_FLOOR) {
    report.add('FAIL', 'clock', `the system time is ${shown}, before this version of coap2mqtt existed: set the time (sudo timedatectl set-ntp true, or sudo date -s "YYYY-MM-DD HH:MM"); until then certificates look not yet valid and readings carry wrong times`);
  } else if (installed !== undefined && now < installed - DAY_MS) {
    report.add('FAIL', 'clock', `the system time is ${shown}, before ${isoDate(installed)} when this installation's files were written: set the time (sudo timedatectl set-ntp true, or sudo date -s "YYYY-MM-DD HH:MM")`);
  } else {
    const synchronized = await ntpSynchronized();
    if (synchronized === false) {
      report.add('warn', 'clock', `${shown}, not synchronized with network time (timedatectl): readings are stamped with this clock; check timedatectl timesync-status, and that the box reaches an NTP server`);
    } else {
      report.add('ok', 'clock', `${shown}${synchronized ? ', synchronized with network time' : ''}`);
    }
  }
  const outbox = context.outbox;
  if (outbox?.state === 'readable' && outbox.newestCreatedAt !== undefined && outbox.newestCreatedAt - now > FUTURE_TOLERANCE_MS) {
    const ahead = outbox.newestCreatedAt - now;
    report.add(
      ahead > FUTURE_FAIL_MS ? 'FAIL' : 'warn',
      'clock',
      `the outbox holds ${outbox.createdAfter} reading${outbox.createdAfter === 1 ? '' : 's'} stamped up to ${isoMinute(outbox.newestCreatedAt)}, ${duration(ahead)} ahead of now: the clock went back since they were stored (or was ahead then); check which time is right and that network time is on`,
    );
  }
}

/**
 * When this installation's files were last written: a clock before it is wrong. Files unpacked from an npm
 * tarball carry a fixed 1985 date, so only dates after the floor count.
 */
function installationTime(): number | undefined {
  let latest: number | undefined;
  for (const url of [new URL('../cli.js', import.meta.url), new URL(import.meta.url), new URL('../../package.json', import.meta.url)]) {
    try {
      const mtime = statSync(url).mtimeMs;
      if (mtime >= CLOCK_FLOOR && (latest === undefined || mtime > latest)) latest = mtime;
    } catch {
      // Not there in this layout.
    }
  }
  return latest;
}

/** timedatectl's verdict; undefined where there is no timedatectl or no systemd to ask. */
function ntpSynchronized(): Promise<boolean | undefined> {
  return new Promise((done) => {
    try {
      execFile('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], { timeout: 2000 }, (error, stdout) => {
        const answer = String(stdout).trim();
        done(error || (answer !== 'yes' && answer !== 'no') ? undefined : answer === 'yes');
      });
    } catch {
      done(undefined);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// 5. State directory, disk, outbox

function checkStateDir(report: Report, context: Context): void {
  const { config, stateDir: dir, service } = context;
  if (!isAbsolute(config.state.dir)) {
    report.add(
      'warn',
      'state.dir',
      `"${config.state.dir}" is a relative path, here ${dir}; the service resolves it against its own working directory, which may differ: set an absolute path such as /var/lib/coap2mqtt`,
    );
  }
  const who = service ? `the service's user ${service.name}` : `user ${currentUserName()}`;
  let stats: Stats | undefined;
  try {
    stats = statSync(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') {
      report.add('FAIL', 'state.dir', `cannot look at ${dir}: ${describeFsError(error)}`);
      return;
    }
  }
  let existing = dir;
  if (!stats) {
    const ancestor = nearestExisting(dir);
    existing = ancestor.path;
    if (!ancestor.stats.isDirectory()) {
      report.add('FAIL', 'state.dir', `${dir} cannot be created: ${ancestor.path} is a file, not a directory; set state.dir to a directory path`);
      return;
    }
    if (!writable(ancestor.path, ancestor.stats, service)) {
      report.add(
        'FAIL',
        'state.dir',
        `${dir} does not exist and ${who} cannot create it (no write permission on ${ancestor.path}): sudo install -d -o ${SERVICE_USER} -g ${SERVICE_USER} -m 750 ${dir}`,
      );
      return;
    }
    report.add('ok', 'state.dir', `${dir} does not exist yet; the gateway creates it at start (${who} may write ${ancestor.path})`);
  } else if (!stats.isDirectory()) {
    report.add('FAIL', 'state.dir', `${dir} is not a directory`);
    return;
  } else if (!writable(dir, stats, service)) {
    const closed = service && closedDirectory(service, dir);
    if (closed) {
      report.add('FAIL', 'state.dir', `${who} cannot reach ${dir}: it may not enter ${closed.dir} (owner ${userName(closed.stats.uid) ?? closed.stats.uid}, mode ${modeString(closed.stats)}): sudo chmod o+x ${closed.dir}, or move state.dir`);
    } else {
      const fix = service ? `sudo chown -R ${service.name}:${service.name} ${dir}` : 'make it writable for the user the gateway runs as';
      report.add('FAIL', 'state.dir', `${dir} is not writable by ${who} (owner ${userName(stats.uid) ?? stats.uid}, mode ${modeString(stats)}): ${fix}`);
    }
  } else {
    const foreign = service ? filesServiceCannotWrite(dir, service) : [];
    if (foreign.length > 0) {
      report.add(
        'FAIL',
        'state.dir',
        `${foreign.slice(0, 4).join(', ')}${foreign.length > 4 ? ` and ${foreign.length - 4} more` : ''} in ${dir} cannot be written by ${service!.name} (was the gateway run with sudo?): sudo chown -R ${service!.name}:${service!.name} ${dir}`,
      );
    } else {
      report.add('ok', 'state.dir', `${dir} exists and is writable by ${who}`);
    }
  }
  checkDisk(report, context, existing);
  checkOutbox(report, context);
}

function checkDisk(report: Report, context: Context, existing: string): void {
  const { outbox } = context.config;
  let free: number;
  try {
    const stats = statfsSync(existing);
    free = stats.bavail * stats.bsize;
  } catch (error) {
    report.add('warn', 'disk', `cannot tell the free space at ${existing}: ${describeFsError(error)}`);
    return;
  }
  if (!outbox.enabled) {
    report.add('ok', 'disk', `${bytes(free)} free (outbox.enabled is false: nothing is stored)`);
    return;
  }
  if (free < outbox.minFreeDiskBytes) {
    report.add('FAIL', 'disk', `only ${bytes(free)} free where ${context.stateDir} lives, below outbox.minFreeDiskBytes (${bytes(outbox.minFreeDiskBytes)}): new readings are answered 5.03 instead of stored; free some space (logs: journalctl --vacuum-size=50M)`);
    return;
  }
  const held = context.outbox?.state === 'readable' ? context.outbox.fileBytes : 0;
  const room = free - outbox.minFreeDiskBytes + held;
  if (room < outbox.maxBytes) {
    report.add(
      'warn',
      'disk',
      `${bytes(free)} free: during a long outage the outbox can grow to only about ${bytes(room)} before readings are refused, not outbox.maxBytes (${bytes(outbox.maxBytes)}); free some space or lower outbox.maxBytes`,
    );
    return;
  }
  report.add('ok', 'disk', `${bytes(free)} free: room for outbox.maxBytes (${bytes(outbox.maxBytes)}) above outbox.minFreeDiskBytes (${bytes(outbox.minFreeDiskBytes)})`);
}

function checkOutbox(report: Report, context: Context): void {
  const snapshot = context.outbox;
  if (!context.config.outbox.enabled || !snapshot) return;
  if (snapshot.state === 'absent') {
    report.add('ok', 'outbox', 'no outbox.sqlite yet: the gateway creates it at its first start');
    return;
  }
  if (snapshot.state === 'unreadable') {
    report.add('warn', 'outbox', `cannot read ${snapshot.path}: ${unreadableOutbox(snapshot.cause, snapshot.error)}`);
    return;
  }
  const file = `${snapshot.path}, ${bytes(snapshot.fileBytes)} on disk`;
  const note = snapshot.leftoverJournal ? ' (left over from a gateway that did not stop cleanly; what its journal holds is not counted)' : '';
  if (snapshot.records === 0 || snapshot.oldestCreatedAt === undefined) {
    report.add('ok', 'outbox', `${file}: empty, everything was delivered${note}`);
    return;
  }
  const age = Date.now() - snapshot.oldestCreatedAt;
  const waiting = `${snapshot.records} reading${snapshot.records === 1 ? '' : 's'} waiting (${bytes(snapshot.bytes)}), the oldest from ${isoMinute(snapshot.oldestCreatedAt)}`;
  if (context.runningPid === undefined) {
    report.add('ok', 'outbox', `${file}: ${waiting}; they are delivered first when the gateway starts${note}`);
  } else if (age > OUTBOX_STUCK_MS) {
    report.add('warn', 'outbox', `${file}: ${waiting}, ${duration(age)} ago: the running gateway is not delivering them; see the upstream line${note}`);
  } else {
    report.add('ok', 'outbox', `${file}: ${waiting}${note}`);
  }
}

/** A file doctor cannot read, in words: what stopped it and what to do. */
function unreadableOutbox(cause: 'stat' | 'open' | 'busy' | 'damaged', error: unknown): string {
  const sudo = process.getuid?.() === 0 ? '' : ' (run doctor with sudo)';
  switch (cause) {
    case 'stat':
      return `${describeFsError(error)}${sudo}`;
    case 'open':
      return `${(error as Error).message}${sudo}`;
    case 'busy':
      return 'busy (the running gateway holds it); run doctor again';
    case 'damaged':
      return `not readable as an outbox: ${(error as Error).message}`;
  }
}

// ---------------------------------------------------------------------------------------------------
// 6. Ports

async function checkPorts(report: Report, context: Context): Promise<void> {
  const { coap, dtls, http: httpConfig, deviceHttp } = context.config;
  await checkUdpPort(report, context, 'coap.port', 'CoAP', coap.host, coap.port);
  if (dtls.enabled) await checkUdpPort(report, context, 'dtls.port', 'DTLS', coap.host, dtls.port);
  if (httpConfig.enabled) await checkHttpPort(report, context, httpConfig.host, httpConfig.port);
  if (deviceHttp.enabled) await checkDeviceHttpPort(report, context, deviceHttp.host, deviceHttp.port);
}

async function checkDeviceHttpPort(report: Report, context: Context, host: string, port: number): Promise<void> {
  if (port === 0) {
    report.add('ok', 'deviceHttp.port', '0: the HTTP device API listens on a free TCP port chosen at start (devices must be told which)');
    return;
  }
  const { bound, error } = await withIpv4Fallback(host, (on) => tryListenTcp(on, port));
  const address = `TCP ${formatAddress(bound, port)}`;
  reportPort(report, context, { check: 'deviceHttp.port', address, host: bound, port, finder: `sudo ss -tlpn 'sport = :${port}'`, hostKey: 'deviceHttp.host' }, error);
}

async function checkUdpPort(report: Report, context: Context, check: string, label: string, host: string, port: number): Promise<void> {
  if (port === 0) {
    report.add('ok', check, `0: ${label} listens on a free UDP port chosen at start (devices must be told which)`);
    return;
  }
  const { bound, error } = await withIpv4Fallback(host, (on) => tryBindUdp(on, port));
  const address = `UDP ${formatAddress(bound, port)}`;
  reportPort(report, context, { check, address, host: bound, port, finder: `sudo ss -ulpn 'sport = :${port}'`, hostKey: 'coap.host' }, error);
}

/** Tries `host`; as the gateway does, "::" on a kernel without IPv6 means IPv4 only. */
async function withIpv4Fallback(
  host: string,
  attempt: (host: string) => Promise<NodeJS.ErrnoException | undefined>,
): Promise<{ bound: string; error: NodeJS.ErrnoException | undefined }> {
  const error = await attempt(host);
  if (host === '::' && (error?.code === 'EAFNOSUPPORT' || error?.code === 'EADDRNOTAVAIL')) return { bound: '0.0.0.0', error: await attempt('0.0.0.0') };
  return { bound: host, error };
}

interface PortCheck {
  readonly check: string;
  /** "UDP [::]:5683" */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** The command that names the program holding the port. */
  readonly finder: string;
  readonly hostKey: string;
}

function reportPort(report: Report, context: Context, { check, address, host, port, finder, hostKey }: PortCheck, error: NodeJS.ErrnoException | undefined): void {
  if (!error) {
    report.add('ok', check, `${address} is free${context.runningPid === undefined ? ' (the gateway is not running)' : ''}`);
    return;
  }
  switch (error.code) {
    case 'EADDRINUSE':
      if (context.runningPid !== undefined) report.add('ok', check, `${address} is in use by the running gateway (pid ${context.runningPid})`);
      else {
        report.add(
          'warn',
          check,
          `${address} is in use, and no coap2mqtt runs with this state.dir: if the gateway is not running (systemctl status coap2mqtt), another program holds the port and the gateway cannot start; ${finder} names it`,
        );
      }
      return;
    case 'EACCES':
      report.add(
        'warn',
        check,
        `user ${currentUserName()} may not listen on ${address}: ports below 1024 need CAP_NET_BIND_SERVICE (AmbientCapabilities= in the systemd unit); choose ${check} 1024 or above, or run doctor with sudo to check the port itself`,
      );
      return;
    case 'EADDRNOTAVAIL':
      report.add('FAIL', check, `${hostKey} "${host}" is not an address of this machine (ip -brief address lists them)`);
      return;
    default:
      report.add('FAIL', check, `cannot listen on ${address} (port ${port}): ${error.message}`);
  }
}

async function checkHttpPort(report: Report, context: Context, host: string, port: number): Promise<void> {
  if (port === 0) {
    report.add('ok', 'http.port', '0: /healthz and /metrics are served on a free TCP port chosen at start');
    return;
  }
  const address = `TCP ${formatAddress(host, port)}`;
  const portCheck: PortCheck = { check: 'http.port', address, host, port, finder: `sudo ss -tlpn 'sport = :${port}'`, hostKey: 'http.host' };
  const error = await tryListenTcp(host, port);
  const health = error?.code === 'EADDRINUSE' ? await getHealthz(host, port) : undefined;
  if (!health) {
    reportPort(report, context, portCheck, error);
    return;
  }
  const summary = summarizeHealth(health.body);
  const by = context.runningPid !== undefined ? `the running gateway (pid ${context.runningPid})` : 'a running gateway';
  if (health.status === 200 && (summary.status === undefined || summary.status === 'ok' || summary.status === 'starting')) {
    report.add('ok', 'http.port', `${address} is served by ${by}; /healthz answers ${health.status}: ${summary.text}`);
  } else if (health.status === 200 || health.status === 503) {
    report.add('warn', 'http.port', `${address} is served by ${by}, which reports a problem; /healthz answers ${health.status}: ${summary.text}`);
  } else {
    report.add('warn', 'http.port', `${address} is in use by an HTTP server whose /healthz answers ${health.status}: an older coap2mqtt, or another program holding http.port`);
  }
}

/** The gateway's /healthz body in a few words (status, whether devices are served, problems); tolerant of its shape. */
function summarizeHealth(body: string): { status: string | undefined; text: string } {
  try {
    const health = JSON.parse(body) as Record<string, unknown>;
    if (health !== null && typeof health === 'object' && typeof health.status === 'string') {
      const parts = [`status "${health.status}"`];
      if (typeof health.ready === 'boolean') parts.push(health.ready ? 'devices are served' : 'devices are NOT served');
      const upstream = health.upstream as { connected?: unknown } | undefined;
      if (typeof upstream?.connected === 'boolean') parts.push(upstream.connected ? 'upstream connected' : 'upstream NOT connected');
      const outbox = health.outbox as { records?: unknown } | undefined;
      if (typeof outbox?.records === 'number') parts.push(`${outbox.records} readings in the outbox`);
      const problems = Array.isArray(health.problems) ? health.problems.filter((problem): problem is string => typeof problem === 'string') : [];
      if (problems.length > 0) parts.push(`problems: ${problems.join('; ')}`);
      return { status: health.status, text: parts.join(', ') };
    }
  } catch {
    // Not JSON: shown as it came.
  }
  const text = body.replace(/\s+/g, ' ').trim();
  return { status: undefined, text: text.length > 200 ? `${text.slice(0, 200)}…` : text || '(empty)' };
}

function getHealthz(host: string, port: number): Promise<{ status: number; body: string } | undefined> {
  return new Promise((done) => {
    const request = http.get({ host, port, path: '/healthz', timeout: LOCAL_PROBE_TIMEOUT_MS }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      response.on('end', () => done({ status: response.statusCode ?? 0, body }));
      response.on('error', () => done(undefined));
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => done(undefined));
  });
}

function tryBindUdp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((done) => {
    let socket: dgram.Socket;
    try {
      socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: false });
    } catch (error) {
      done(error as NodeJS.ErrnoException);
      return;
    }
    socket.once('error', (error: NodeJS.ErrnoException) => {
      try {
        socket.close();
      } catch {
        // Never bound.
      }
      done(error);
    });
    socket.bind({ address: host, port, exclusive: true }, () => socket.close(() => done(undefined)));
  });
}

function tryListenTcp(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((done) => {
    const server = net.createServer();
    server.once('error', (error: NodeJS.ErrnoException) => done(error));
    server.listen({ host, port, exclusive: true }, () => server.close(() => done(undefined)));
  });
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---------------------------------------------------------------------------------------------------
// Users and permissions

type ServiceUser = SystemUser;

const accounts = new SystemAccounts();
const userName = (uid: number): string | undefined => accounts.userName(uid);
const groupName = (gid: number): string | undefined => accounts.groupName(gid);

function currentUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '?');
  }
}

function canAccess(user: ServiceUser, stats: Stats, access: 'r' | 'w' | 'x'): boolean {
  const bits = access === 'r' ? [0o400, 0o040, 0o004] : access === 'w' ? [0o200, 0o020, 0o002] : [0o100, 0o010, 0o001];
  if (stats.uid === user.uid) return (stats.mode & bits[0]!) !== 0;
  if (user.groups.has(stats.gid)) return (stats.mode & bits[1]!) !== 0;
  return (stats.mode & bits[2]!) !== 0;
}

/** The first directory above `path` the user may not enter (no x permission), if any. */
function closedDirectory(user: ServiceUser, path: string): { dir: string; stats: Stats } | undefined {
  for (let dir = dirname(resolve(path)); ; dir = dirname(dir)) {
    try {
      const stats = statSync(dir);
      if (!canAccess(user, stats, 'x')) return { dir, stats };
    } catch {
      return undefined;
    }
    if (dir === dirname(dir)) return undefined;
  }
}

/** Writable by the service's user if known, else by whoever runs doctor. */
function writable(path: string, stats: Stats, service: ServiceUser | undefined): boolean {
  if (service) return canAccess(service, stats, 'w') && canAccess(service, stats, 'x') && closedDirectory(service, path) === undefined;
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Files in the state directory the service could not write: left by a gateway run as root, typically. */
function filesServiceCannotWrite(dir: string, service: ServiceUser): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((name) => {
    try {
      return !canAccess(service, statSync(join(dir, name)), 'w');
    } catch {
      return false;
    }
  });
}

function nearestExisting(path: string): { path: string; stats: Stats } {
  for (let candidate = dirname(path); ; candidate = dirname(candidate)) {
    try {
      return { path: candidate, stats: statSync(candidate) };
    } catch {
      if (candidate === dirname(candidate)) throw new Error(`no part of ${path} exists`);
    }
  }
}

function modeString(stats: Stats): string {
  return `0${(stats.mode & 0o777).toString(8)}`;
}

function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return `permission denied for user ${currentUserName()}`;
  if (code === 'EISDIR') return 'a directory, not a file';
  return (error as Error).message;
}
