// One look each at the broker over TCP, TLS and MQTT, turned into what a technician can act on. Every
// probe settles once, closes what it opened, and clears its own timer.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import mqtt, { type IClientOptions } from 'mqtt';
import type { UpstreamConfig } from '../../config/load.js';
import { isoDate } from '../words.js';

/** How long doctor waits for a program on this box (the embedded broker, /healthz). */
export const LOCAL_PROBE_TIMEOUT_MS = 3000;

export type Reach =
  | { readonly stage: 'tcp' | 'tls'; readonly problem: string }
  | { readonly stage: 'tcp' }
  | { readonly stage: 'tls'; readonly peer: tls.PeerCertificate | undefined };

/** A probe's way out: the first outcome cleans up and is reported; later events (a second error) are ignored. */
function settleOnce<T>(report: (outcome: T) => void, cleanUp: () => void): (outcome: T) => void {
  let settled = false;
  return (outcome) => {
    if (settled) return;
    settled = true;
    cleanUp();
    report(outcome);
  };
}

export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<Reach> {
  return new Promise((done) => {
    const socket = net.connect({ host, port });
    const finish = settleOnce(done, () => {
      clearTimeout(timer);
      socket.destroy();
    });
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
export function tlsProbe(host: string, port: number, upstream: UpstreamConfig): Promise<Reach> {
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
    const finish = settleOnce(done, () => {
      clearTimeout(timer);
      socket.destroy();
    });
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

export function describeTlsError(error: NodeJS.ErrnoException): string {
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

export type MqttOutcome = { readonly ms: number } | { readonly refused: number } | { readonly problem: string };

/** One MQTT CONNECT; disconnects right after the CONNACK. */
export function mqttProbe(url: string, options: IClientOptions, timeoutMs: number): Promise<MqttOutcome> {
  const started = Date.now();
  return new Promise((done) => {
    const client = mqtt.connect(url, { ...options, clean: true, reconnectPeriod: 0, connectTimeout: timeoutMs });
    const finish = settleOnce(
      (outcome: MqttOutcome): void => {
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
      },
      () => clearTimeout(timer),
    );
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
