// Reading PEM certificates and private keys the way the gateway does, and saying what is wrong with them.
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, type Stats } from 'node:fs';
import type tls from 'node:tls';
import { days, isoDate } from '../words.js';
import { SERVICE_USER } from './context.js';
import type { SystemUser } from '../system-user.js';
import { describeFsError, groupName, modeString } from './permissions.js';
import type { Status } from './report.js';

const DAY_MS = 86_400_000;
/** A certificate expiring sooner than this is worth renewing now. */
const EXPIRY_WARNING_MS = 30 * DAY_MS;

export function readCertificates(path: string): { readonly list: X509Certificate[] } | { readonly problem: string } {
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

export function readPrivateKey(path: string): { readonly key: KeyObject } | { readonly problem: string } {
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

export function describeValidity(cert: X509Certificate, apply: string): { status: Status; text: string } {
  const now = Date.now();
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (now < from) return { status: 'FAIL', text: `is valid only from ${isoDate(from)}: is this box's clock right? (see the clock line)` };
  if (now > to) return { status: 'FAIL', text: `expired on ${isoDate(to)}, ${days(now - to)} ago: renew it, ${apply}` };
  if (to - now < EXPIRY_WARNING_MS) return { status: 'warn', text: `expires on ${isoDate(to)}, in ${days(to - now)}: renew it soon, ${apply}` };
  return { status: 'ok', text: `is valid until ${isoDate(to)}` };
}

export function subjectName(cert: X509Certificate): string {
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
  return cn ? `CN=${cn}` : cert.subject.split('\n')[0] ?? 'no subject';
}

export function certName(peer: tls.PeerCertificate): string {
  return peer.subject?.CN ? `CN=${peer.subject.CN}` : 'no CN';
}

/** Who besides the owner and the service can read a private key, in words; undefined when nobody. */
export function keyExposure(stats: Stats, service: SystemUser | undefined): string | undefined {
  if ((stats.mode & 0o004) !== 0) return `readable by every user on this box (mode ${modeString(stats)})`;
  if ((stats.mode & 0o040) !== 0 && stats.gid !== 0) {
    const group = groupName(stats.gid);
    const serviceGroup = service === undefined ? group === SERVICE_USER : service.gid === stats.gid;
    if (!serviceGroup) return `readable by the group ${group ?? stats.gid} (mode ${modeString(stats)}), not only by the service's`;
  }
  return undefined;
}

/** Why the service's user cannot read a file it needs, or undefined (it can, or there is no such user). */
