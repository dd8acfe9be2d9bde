// The advice for a listener that cannot start: the same kernel answer reads the same way for CoAP, DTLS,
// the health and metrics endpoint and the HTTP device API, naming each one's own keys.
import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { describeDeviceHttpBindError } from '../../src/front-ends/http/server.js';
import { describeBindError } from '../../src/net/udp-socket.js';
import { ipv6Unavailable, listenFailure, portHolderCommand } from '../../src/net/socket-advice.js';
import { describeHttpBindError } from '../../src/ops/http-server.js';

const kernel = (code: string, message = `listen ${code}`): NodeJS.ErrnoException => Object.assign(new Error(message), { code });

/** A real EADDRINUSE: a second exclusive bind of a port already held. */
async function portInUseError(): Promise<NodeJS.ErrnoException> {
  const holder = dgram.createSocket('udp4');
  await new Promise<void>((done) => holder.bind({ address: '127.0.0.1', port: 0, exclusive: true }, done));
  const second = dgram.createSocket('udp4');
  try {
    return await new Promise<NodeJS.ErrnoException>((done) => {
      second.once('error', done);
      second.bind({ address: '127.0.0.1', port: holder.address().port, exclusive: true });
    });
  } finally {
    second.close();
    holder.close();
  }
}

describe('socket advice', () => {
  it('names the listener, its port and what to change when the port is taken', async () => {
    const inUse = await portInUseError();
    expect(listenFailure(inUse)).toBe('in-use');
    expect(describeBindError(inUse, 'CoAP', '0.0.0.0', 5683, 'coap.port')).toBe(
      'CoAP port 5683 on 0.0.0.0 is already in use (another coap2mqtt or CoAP server?); stop it or change coap.port',
    );
    expect(describeHttpBindError(inUse, '127.0.0.1', 9464)).toBe(
      'the health and metrics port 9464 on 127.0.0.1 is already in use (another coap2mqtt, or a Prometheus exporter?); stop it, change http.port, or set http.enabled to false',
    );
    expect(describeDeviceHttpBindError(inUse, '::', 8080)).toBe(
      'the HTTP device API port 8080 on :: is already in use (ThingsBoard itself, or another web server?); stop it or change deviceHttp.port',
    );
  });

  it('says a low port needs CAP_NET_BIND_SERVICE, naming the port key of each listener', () => {
    const denied = kernel('EACCES');
    expect(describeBindError(denied, 'DTLS', '::', 684, 'dtls.port')).toBe('not allowed to listen on UDP port 684 (dtls.port); ports below 1024 need CAP_NET_BIND_SERVICE');
    expect(describeHttpBindError(denied, '127.0.0.1', 80)).toBe('not allowed to listen on TCP port 80 (http.port); ports below 1024 need CAP_NET_BIND_SERVICE');
    expect(describeDeviceHttpBindError(denied, '::', 80)).toBe('not allowed to listen on TCP port 80 (deviceHttp.port); ports below 1024 need CAP_NET_BIND_SERVICE');
  });

  it('names the host key of an address that is not this machine\'s, or a name that does not resolve', () => {
    expect(describeBindError(kernel('EADDRNOTAVAIL'), 'DTLS', '192.0.2.7', 5684, 'dtls.port')).toBe('coap.host "192.0.2.7" is not an address of this machine');
    expect(describeHttpBindError(kernel('EADDRNOTAVAIL'), '192.0.2.7', 9464)).toBe('http.host "192.0.2.7" is not an address of this machine');
    expect(describeDeviceHttpBindError(kernel('EADDRNOTAVAIL'), '192.0.2.7', 8080)).toBe('deviceHttp.host "192.0.2.7" is not an address of this machine');
    expect(describeHttpBindError(kernel('ENOTFOUND'), 'metrics.lan', 9464)).toBe('http.host "metrics.lan" is not an address or a known host name');
    expect(describeDeviceHttpBindError(kernel('EAI_AGAIN'), 'api.lan', 8080)).toBe('deviceHttp.host "api.lan" is not an address or a known host name');
  });

  it('passes anything else on with the keys to look at', () => {
    const odd = kernel('EMFILE', 'too many open files');
    expect(describeBindError(odd, 'CoAP', '0.0.0.0', 5683, 'coap.port')).toBe('cannot listen for CoAP on 0.0.0.0:5683 (coap.host, coap.port): too many open files');
    expect(describeHttpBindError(odd, '127.0.0.1', 9464)).toBe('cannot listen for health and metrics on 127.0.0.1:9464 (http.host, http.port): too many open files');
    expect(describeDeviceHttpBindError(odd, '::', 8080)).toBe('cannot listen for the HTTP device API on :::8080 (deviceHttp.host, deviceHttp.port): too many open files');
  });

  it('falls back to IPv4 only for "::" on a kernel without IPv6', () => {
    expect(ipv6Unavailable('::', kernel('EAFNOSUPPORT'))).toBe(true);
    expect(ipv6Unavailable('::', kernel('EADDRNOTAVAIL'))).toBe(true);
    expect(ipv6Unavailable('::', kernel('EADDRINUSE'))).toBe(false);
    expect(ipv6Unavailable('::1', kernel('EADDRNOTAVAIL'))).toBe(false);
    expect(ipv6Unavailable('::', undefined)).toBe(false);
  });

  it('names the command that finds the program holding a port', () => {
    expect(portHolderCommand('UDP', 5683)).toBe("sudo ss -ulpn 'sport = :5683'");
    expect(portHolderCommand('TCP', 9464)).toBe("sudo ss -tlpn 'sport = :9464'");
  });
});
