// Certificates and keys of DTLS and of the broker connection: readable by the service, parseable, valid
// now and for a while, the key belonging to the certificate, and not readable by everyone.
import type { X509Certificate } from 'node:crypto';
import { statSync, type Stats } from 'node:fs';
import { isoDate } from '../words.js';
import { describeValidity, keyExposure, readCertificates, readPrivateKey, subjectName } from './certificates.js';
import { SERVICE_USER, type Context } from './context.js';
import { canAccess, closedDirectory, groupName, modeString, userName } from './permissions.js';
import type { Report, Status } from './report.js';

export function checkKeyMaterial(report: Report, context: Context): void {
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
