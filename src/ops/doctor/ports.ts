// The ports the gateway listens on: free, held by the running gateway, or taken by another program.
import { ipv6Unavailable, listenFailure, notLocalAddress, PRIVILEGED_PORTS, portHolderCommand } from '../../net/socket-advice.js';
import type { Context } from './context.js';
import { getHealthz, summarizeHealth } from './healthz.js';
import { formatAddress, tryBindUdp, tryListenTcp } from './listen-probes.js';
import { currentUserName } from './permissions.js';
import type { Report } from './report.js';

export async function checkPorts(report: Report, context: Context): Promise<void> {
  const { coap, dtls, http: httpConfig, deviceHttp, mqttDevices } = context.config;
  await checkUdpPort(report, context, 'coap.port', 'CoAP', coap.host, coap.port);
  if (dtls.enabled) await checkUdpPort(report, context, 'dtls.port', 'DTLS', coap.host, dtls.port);
  if (httpConfig.enabled) await checkHttpPort(report, context, httpConfig.host, httpConfig.port);
  if (deviceHttp.enabled) await checkTcpPort(report, context, { check: 'deviceHttp.port', label: 'the HTTP device API', hostKey: 'deviceHttp.host', host: deviceHttp.host, port: deviceHttp.port });
  if (mqttDevices.enabled) {
    const mqtt = { label: 'MQTT for devices', hostKey: 'mqttDevices.host', host: mqttDevices.host };
    await checkTcpPort(report, context, { ...mqtt, check: 'mqttDevices.port', port: mqttDevices.port });
    if (mqttDevices.tls) await checkTcpPort(report, context, { ...mqtt, check: 'mqttDevices.tlsPort', label: 'MQTT over TLS for devices', port: mqttDevices.tlsPort });
  }
}

async function checkTcpPort(report: Report, context: Context, listener: { check: string; label: string; hostKey: string; host: string; port: number }): Promise<void> {
  const { check, label, hostKey, host, port } = listener;
  if (port === 0) {
    report.add('ok', check, `0: ${label} listens on a free TCP port chosen at start (devices must be told which)`);
    return;
  }
  const { bound, error } = await withIpv4Fallback(host, (on) => tryListenTcp(on, port));
  reportPort(report, context, { check, transport: 'TCP', host: bound, port, hostKey }, error);
}

async function checkUdpPort(report: Report, context: Context, check: string, label: string, host: string, port: number): Promise<void> {
  if (port === 0) {
    report.add('ok', check, `0: ${label} listens on a free UDP port chosen at start (devices must be told which)`);
    return;
  }
  const { bound, error } = await withIpv4Fallback(host, (on) => tryBindUdp(on, port));
  reportPort(report, context, { check, transport: 'UDP', host: bound, port, hostKey: 'coap.host' }, error);
}

/** Tries `host`; as the gateway does, "::" on a kernel without IPv6 means IPv4 only. */
async function withIpv4Fallback(
  host: string,
  attempt: (host: string) => Promise<NodeJS.ErrnoException | undefined>,
): Promise<{ bound: string; error: NodeJS.ErrnoException | undefined }> {
  const error = await attempt(host);
  if (ipv6Unavailable(host, error)) return { bound: '0.0.0.0', error: await attempt('0.0.0.0') };
  return { bound: host, error };
}

interface PortCheck {
  readonly check: string;
  readonly transport: 'UDP' | 'TCP';
  readonly host: string;
  readonly port: number;
  readonly hostKey: string;
}

/** "UDP [::]:5683" */
const shownAddress = ({ transport, host, port }: PortCheck): string => `${transport} ${formatAddress(host, port)}`;

function reportPort(report: Report, context: Context, portCheck: PortCheck, error: NodeJS.ErrnoException | undefined): void {
  const { check, host, port, hostKey } = portCheck;
  const address = shownAddress(portCheck);
  if (!error) {
    report.add('ok', check, `${address} is free${context.runningPid === undefined ? ' (the gateway is not running)' : ''}`);
    return;
  }
  switch (listenFailure(error)) {
    case 'in-use':
      if (context.runningPid !== undefined) report.add('ok', check, `${address} is in use by the running gateway (pid ${context.runningPid})`);
      else {
        report.add(
          'warn',
          check,
          `${address} is in use, and no coap2mqtt runs with this state.dir: if the gateway is not running (systemctl status coap2mqtt), another program holds the port and the gateway cannot start; ${portHolderCommand(portCheck.transport, port)} names it`,
        );
      }
      return;
    case 'not-allowed':
      report.add(
        'warn',
        check,
        `user ${currentUserName()} may not listen on ${address}: ${PRIVILEGED_PORTS} (AmbientCapabilities= in the systemd unit); choose ${check} 1024 or above, or run doctor with sudo to check the port itself`,
      );
      return;
    case 'not-local':
      report.add('FAIL', check, `${notLocalAddress(hostKey, host)} (ip -brief address lists them)`);
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
  const portCheck: PortCheck = { check: 'http.port', transport: 'TCP', host, port, hostKey: 'http.host' };
  const address = shownAddress(portCheck);
  const error = await tryListenTcp(host, port);
  const health = error && listenFailure(error) === 'in-use' ? await getHealthz(host, port) : undefined;
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
