// The broker: its name resolves, its port answers, TLS holds (for mqtts://), and it takes the gateway's
// credentials. With no upstream.url, the embedded broker's port instead (embedded-broker.ts).
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { UpstreamConfig } from '../../config/load.js';
import { redactUrl } from '../../log.js';
import { mqttClientOptions } from '../../upstream/connection.js';
import { isoDate } from '../words.js';
import { certName } from './certificates.js';
import type { Context } from './context.js';
import { checkEmbeddedBroker } from './embedded-broker.js';
import { mqttProbe, tcpProbe, tlsProbe } from './probes.js';
import type { Report } from './report.js';

export async function checkUpstream(report: Report, context: Context): Promise<void> {
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

/** The client id the gateway keeps in the state directory, if it made one; doctor never creates it. */
function storedClientId(stateDir: string): string | undefined {
  try {
    return readFileSync(join(stateDir, 'mqtt-client-id'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
