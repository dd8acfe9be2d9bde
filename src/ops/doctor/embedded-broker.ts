// With no upstream.url the gateway runs its own MQTT broker: is its port free, or held by this gateway,
// by another broker, or by a program that does not speak MQTT?
import { randomBytes } from 'node:crypto';
import { listenFailure, notLocalAddress, PRIVILEGED_PORTS, portHolderCommand } from '../../net/socket-advice.js';
import type { Context } from './context.js';
import { formatAddress, tryListenTcp } from './listen-probes.js';
import { LOCAL_PROBE_TIMEOUT_MS, mqttProbe } from './probes.js';
import type { Report } from './report.js';

export async function checkEmbeddedBroker(report: Report, context: Context): Promise<void> {
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
  const failure = listenFailure(error);
  if (failure === 'not-local') {
    report.add('FAIL', 'upstream', notLocalAddress('embeddedBroker.host', host));
    return;
  }
  if (failure === 'not-allowed') {
    report.add('warn', 'upstream', `this user may not listen on TCP ${address} (${PRIVILEGED_PORTS}); choose embeddedBroker.port 1024 or above, or run doctor with sudo`);
    return;
  }
  if (failure !== 'in-use') {
    report.add('FAIL', 'upstream', `cannot listen on TCP ${address} for the embedded broker: ${error.message}`);
    return;
  }
  const outcome = await mqttProbe(
    `mqtt://${address}`,
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
    `${address} (embeddedBroker.port) is taken by a program that does not speak MQTT: the gateway cannot start its embedded broker there; stop it (${portHolderCommand('TCP', port)} names it) or change embeddedBroker.port`,
  );
}
