// Certificates for DTLS tests, made fresh with the openssl CLI (ECDSA P-256, as constrained devices use):
// nothing committed, nothing that expires under the test suite.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Identity {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
  /** "AB:CD:..." as openssl and Node print it. */
  readonly fingerprint256: string;
}

export interface TestPki {
  readonly caFile: string;
  /** The gateway's certificate, for 127.0.0.1 and localhost, signed by the CA. */
  readonly server: Identity;
  /** A device certificate signed by the CA, CN "sensor-ca-1". */
  readonly client: Identity;
  /** A self-signed device certificate, CN "sensor-pinned-1", trusted only by its pinned fingerprint. */
  readonly pinned: Identity;
  /** Signed by another CA nobody configured, CN "sensor-ca-1" like the trusted one. */
  readonly rogue: Identity;
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function selfSigned(dir: string, name: string, subject: string, extensions: string[] = []): void {
  openssl(['req', '-x509', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '30', '-subj', subject, ...extensions], dir);
}

function signed(dir: string, name: string, subject: string, ca: string, extensions: string): void {
  openssl(['req', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '30', '-out', `${name}.pem`, '-extfile', `${name}.ext`],
    dir,
  );
}

function identity(dir: string, name: string): Identity {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  const cert = readFileSync(certFile, 'utf8');
  return { certFile, keyFile, cert, key: readFileSync(keyFile, 'utf8'), fingerprint256: new X509Certificate(cert).fingerprint256 };
}

export function makeTestPki(dir: string): TestPki {
  mkdirSync(dir, { recursive: true });
  selfSigned(dir, 'ca', '/CN=coap2mqtt test CA', ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  selfSigned(dir, 'rogue-ca', '/CN=rogue CA', ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  signed(dir, 'server', '/CN=localhost', 'ca', 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  signed(dir, 'client', '/CN=sensor-ca-1', 'ca', 'extendedKeyUsage=clientAuth\n');
  signed(dir, 'rogue', '/CN=sensor-ca-1', 'rogue-ca', 'extendedKeyUsage=clientAuth\n');
  selfSigned(dir, 'pinned', '/CN=sensor-pinned-1');
  return {
    caFile: join(dir, 'ca.pem'),
    server: identity(dir, 'server'),
    client: identity(dir, 'client'),
    pinned: identity(dir, 'pinned'),
    rogue: identity(dir, 'rogue'),
  };
}
