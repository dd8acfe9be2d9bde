// The MQTT front end's pure parts: packets cut from the byte stream before anything is parsed (so the size
// bound holds), one shared parser that nothing leaks through, persistent sessions, and ThingsBoard's topic
// table as the MQTT dialect maps it. Connections themselves are tested end to end (test/e2e/mqtt-*).
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge/index.js';
import type { Provisioner } from '../../src/bridge/provision.js';
import { createDeviceApis } from '../../src/device-api/index.js';
import { RequestLimits } from '../../src/device-api/limits.js';
import { Operation } from '../../src/device-api/operations.js';
import type { DeviceRequest } from '../../src/device-api/request.js';
import { subscriptionKind } from '../../src/device-api/dialects/thingsboard-mqtt.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import { TokenCheck } from '../../src/devices/token-check.js';
import { MqttFramer } from '../../src/front-ends/mqtt/framing.js';
import { PacketReader } from '../../src/front-ends/mqtt/packets.js';
import { MqttSessions } from '../../src/front-ends/mqtt/sessions.js';
import { connackCode, sessionOf, subscribeFailure } from '../../src/front-ends/mqtt/versions.js';
import { createLogger } from '../../src/log.js';
import type { AttributeSet, UplinkOutcome } from '../../src/model.js';

const T0 = 1_700_000_000_000;
const log = createLogger('silent');
const publish = (topic: string, payload: string, messageId = 1) => mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 1, messageId, retain: false, dup: false });

describe('MqttFramer', () => {
  it('cuts whole packets out of chunks split anywhere, headers included', () => {
    const packets = [publish('v1/devices/me/telemetry', '{"t":1}'), publish('v1/devices/me/telemetry', 'x'.repeat(300), 2), mqttPacket.generate({ cmd: 'pingreq' })];
    const stream = Buffer.concat(packets);
    for (const cut of [1, 2, 3, 7, 200]) {
      const framer = new MqttFramer(65_536);
      const frames: Buffer[] = [];
      for (let at = 0; at < stream.length; at += cut) {
        const result = framer.push(stream.subarray(at, at + cut));
        expect(result.ok).toBe(true);
        if (result.ok) frames.push(...result.frames);
      }
      expect(frames.map((frame) => frame.toString('hex'))).toEqual(packets.map((packet) => packet.toString('hex')));
      expect(framer.pendingBytes).toBe(0);
    }
  });

  it('refuses a packet announcing more than the bound from its header, before its body arrives', () => {
    const framer = new MqttFramer(1024);
    // PUBLISH announcing 268,435,455 bytes: the largest remaining length MQTT can say.
    const result = framer.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
    expect(result).toEqual({ ok: false, reason: 'a packet of 268435460 bytes is over the limit of 1024 (mqttDevices.maxPacketBytes)' });
  });

  it('refuses a remaining length longer than four bytes', () => {
    expect(new MqttFramer(1024).push(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]))).toEqual({ ok: false, reason: 'malformed remaining length in a packet header' });
  });
});

describe('PacketReader', () => {
  it('reads one packet per frame, and a bad frame leaves nothing behind for the next', () => {
    const reader = new PacketReader();
    const connect = mqttPacket.generate({ cmd: 'connect', clientId: 'c', protocolVersion: 4, username: 'token', keepalive: 30, clean: true });
    expect(reader.read(connect, 4)).toMatchObject({ cmd: 'connect', username: 'token', keepalive: 30 });
    // A CONNECT of an unknown protocol level: refused, and the parser is replaced.
    const bad = Buffer.from(connect);
    bad[8] = 9;
    expect(reader.read(bad, 4)).toBeInstanceOf(Error);
    expect(reader.read(publish('v1/devices/me/telemetry', '{"t":2}'), 4)).toMatchObject({ cmd: 'publish', topic: 'v1/devices/me/telemetry', qos: 1 });
  });

  it('reads each connection\'s packets at its own protocol level: an MQTT 5 CONNECT changes nothing for the next 3.1.1 frame', () => {
    const reader = new PacketReader();
    const v5 = mqttPacket.generate({ cmd: 'connect', clientId: 'c', protocolVersion: 5, clean: true, keepalive: 0, properties: { sessionExpiryInterval: 60 } }, { protocolVersion: 5 });
    expect(reader.read(v5, 4)).toMatchObject({ cmd: 'connect', protocolVersion: 5, properties: { sessionExpiryInterval: 60 } });
    expect(reader.read(publish('v1/devices/me/telemetry', '{"t":3}'), 4)).toMatchObject({ cmd: 'publish', payload: Buffer.from('{"t":3}') });
    const v5Publish = mqttPacket.generate(
      { cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: '{"t":4}', qos: 1, messageId: 3, retain: false, dup: false, properties: { contentType: 'application/json' } },
      { protocolVersion: 5 },
    );
    expect(reader.read(v5Publish, 5)).toMatchObject({ cmd: 'publish', payload: Buffer.from('{"t":4}'), properties: { contentType: 'application/json' } });
  });
});

describe('MQTT versions', () => {
  it('answers each refusal with the code of its version, as ThingsBoard does', () => {
    expect([connackCode('bad-credentials', 4), connackCode('bad-credentials', 5)]).toEqual([5, 0x86]);
    expect([connackCode('not-authorized', 3), connackCode('not-authorized', 5)]).toEqual([5, 0x87]);
    expect([subscribeFailure(4), subscribeFailure(5)]).toEqual([0x80, 0x8f]);
  });

  it('keeps a session after the connection when 3.1.1 says not clean, or MQTT 5 gives it an expiry', () => {
    const connect = (protocolVersion: 4 | 5, clean: boolean, sessionExpiryInterval?: number) =>
      sessionOf({ cmd: 'connect', clientId: 'c', protocolVersion, clean, ...(sessionExpiryInterval !== undefined ? { properties: { sessionExpiryInterval } } : {}) });
    expect(connect(4, false)).toEqual({ clean: false, persistent: true });
    expect(connect(4, true)).toEqual({ clean: true, persistent: false });
    expect(connect(5, false)).toEqual({ clean: false, persistent: false });
    expect(connect(5, true, 3600)).toEqual({ clean: true, persistent: true });
  });
});

describe('MqttSessions', () => {
  it('resumes a persistent session with its subscriptions; clean session drops it', () => {
    const sessions = new MqttSessions(10, 0);
    expect(sessions.resume('dev\u0000c1', false)).toBeUndefined();
    sessions.remember('dev\u0000c1', 'v1/devices/me/rpc/request/+', 1);
    expect([...(sessions.resume('dev\u0000c1', false) ?? [])]).toEqual([['v1/devices/me/rpc/request/+', 1]]);
    sessions.forgetFilter('dev\u0000c1', 'v1/devices/me/rpc/request/+');
    expect([...(sessions.resume('dev\u0000c1', false) ?? [])]).toEqual([]);
    expect(sessions.resume('dev\u0000c1', true)).toBeUndefined();
    expect(sessions.resume('dev\u0000c1', false)).toBeUndefined();
  });

  it('keeps at most its bound, forgetting the least recently used', () => {
    const sessions = new MqttSessions(2, 0);
    for (const key of ['a', 'b', 'c']) {
      sessions.resume(key, false);
      sessions.remember(key, 'v1/devices/me/attributes', 0);
    }
    expect(sessions.size).toBe(2);
    expect(sessions.resume('a', false)).toBeUndefined();
  });
});

function setUp() {
  const registry = new DeviceRegistry([{ name: 'Boiler-7', type: 'boiler', token: 'boiler-token', psk: undefined, cert: undefined }]);
  const limits = new RequestLimits(
    { requestsPerSecond: 0, burst: 0, deviceRequestsPerSecond: 0, deviceBurst: 1, unknownTokenFailures: 2, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 60_000 },
    log,
    T0,
  );
  const reads: unknown[] = [];
  const bridge = {
    telemetry: () => Promise.resolve<UplinkOutcome>({ status: 'accepted' }),
    readAttributes: (_device, keys) => {
      reads.push(keys);
      return Promise.resolve({ status: 'not-found' });
    },
    clientRpc: () => Promise.resolve({ status: 'timeout' }),
    sharedAttributes: () => ({}) as AttributeSet,
  } as Partial<Bridge> as Bridge;
  const apis = createDeviceApis({ registry, bridge, provisioner: {} as Provisioner, limits, tokens: new TokenCheck(registry, limits, log), thethings: undefined, coapPackageWaitMs: 0, log: () => log });
  return { ...apis.mqtt, registry, reads };
}

/** A request of Boiler-7's connection, or of a provisioning session (no device). */
function mqttRequest(method: 'POST' | 'GET', topic: string, body: string, provisioning = false): DeviceRequest {
  const device = provisioning ? undefined : setUp().registry.findByToken('boiler-token');
  return {
    method,
    segments: topic.split('/'),
    query: [],
    body: Buffer.from(body),
    unsupportedFormat: undefined,
    peer: { address: '192.0.2.7', ...(device ? { device } : {}) },
    receivedAt: T0,
    updates: method === 'GET' ? 'open' : undefined,
    continuation: false,
    restored: false,
  };
}

describe('ThingsBoard\'s MQTT dialect', () => {
  it('authenticates a CONNECT by its username, opens provisioning sessions, and blocks a guessing address', () => {
    const { dialect } = setUp();
    const connect = (username: string | undefined, clientId = 'c1') => dialect.connect({ username, clientId, certificate: undefined, address: '192.0.2.9', receivedAt: T0 });
    expect(connect('boiler-token')).toMatchObject({ kind: 'device', device: { name: 'Boiler-7' } });
    expect(connect('provision')).toEqual({ kind: 'provisioning' });
    expect(connect(undefined, 'provision')).toEqual({ kind: 'provisioning' });
    expect(connect(undefined)).toMatchObject({ kind: 'refused', code: 'not-authorized' });
    expect(connect('guess-1')).toEqual({ kind: 'refused', code: 'bad-credentials', reason: 'unknown access token' });
    expect(connect('guess-2')).toMatchObject({ kind: 'refused', code: 'bad-credentials' });
    // Two different unknown tokens: the address is blocked, even for the right token.
    expect(connect('boiler-token')).toMatchObject({ kind: 'refused', code: 'not-authorized', reason: expect.stringMatching(/blocked/) });
  });

  it('lets a pinned client certificate name its device whatever the username says, empty included', () => {
    const registry = new DeviceRegistry([{ name: 'Valve-3', type: 'valve', token: undefined, psk: undefined, cert: { fingerprint256: 'ab'.repeat(32) } }]);
    const limits = new RequestLimits(
      { requestsPerSecond: 0, burst: 0, deviceRequestsPerSecond: 0, deviceBurst: 1, unknownTokenFailures: 2, unknownTokenWindowMs: 60_000, unknownTokenBlockMs: 60_000 },
      log,
      T0,
    );
    const { dialect } = createDeviceApis({ registry, bridge: {} as Bridge, provisioner: {} as Provisioner, limits, tokens: new TokenCheck(registry, limits, log), thethings: undefined, coapPackageWaitMs: 0, log: () => log }).mqtt;
    const certificate = { fingerprint256: 'ab'.repeat(32), commonName: 'valve-3', subject: 'CN=valve-3', chainError: 'self-signed certificate' };
    for (const username of [undefined, '', 'anything']) {
      expect(dialect.connect({ username, clientId: 'v', certificate, address: '192.0.2.9', receivedAt: T0 })).toMatchObject({ kind: 'device', device: { name: 'Valve-3' } });
    }
    expect(dialect.connect({ username: undefined, clientId: 'v', certificate: { ...certificate, fingerprint256: 'cd'.repeat(32) }, address: '192.0.2.9', receivedAt: T0 })).toMatchObject({
      kind: 'refused',
      code: 'not-authorized',
      reason: expect.stringMatching(/does not verify against mqttDevices\.ca/),
    });
  });

  it('names the answer topic of each question, and none for uplinks', () => {
    const { dialect } = setUp();
    expect(dialect.answerTopic('v1/devices/me/attributes/request/7')).toBe('v1/devices/me/attributes/response/7');
    expect(dialect.answerTopic('v1/devices/me/rpc/request/3')).toBe('v1/devices/me/rpc/response/3');
    expect(dialect.answerTopic('v2/fw/request/1/chunk/0')).toBe('v2/fw/response/1/chunk/0');
    expect(dialect.answerTopic('/provision/request')).toBe('/provision/response');
    expect(dialect.answerTopic('v1/devices/me/telemetry')).toBeUndefined();
    expect(dialect.answerTopic('v1/devices/me/rpc/response/3')).toBeUndefined();
    expect(dialect.errorTopic('v2/sw/request/1/chunk/0')).toBe('v2/fw/error');
    expect(dialect.errorTopic('v1/devices/me/attributes/request/7')).toBeUndefined();
  });

  it('takes the subscriptions ThingsBoard takes, as exact strings', () => {
    expect(subscriptionKind('v1/devices/me/attributes')).toBe('attributes');
    expect(subscriptionKind('v1/devices/me/rpc/request/+')).toBe('rpc');
    expect(subscriptionKind('v2/fw/response/+/chunk/+')).toBe('answers');
    expect(subscriptionKind('v1/devices/me/#')).toBeUndefined();
    expect(subscriptionKind('v1/devices/+/attributes')).toBeUndefined();
  });

  it('labels each topic with its operation', () => {
    const { api } = setUp();
    const cases: Array<[string, 'POST' | 'GET', number]> = [
      ['v1/devices/me/telemetry', 'POST', Operation.telemetry],
      ['v1/devices/me/attributes', 'POST', Operation.attributes],
      ['v1/devices/me/attributes', 'GET', Operation.attributes_observe],
      ['v1/devices/me/attributes/request/1', 'POST', Operation.attributes_read],
      ['v1/devices/me/rpc/request/+', 'GET', Operation.rpc_observe],
      ['v1/devices/me/rpc/request/1', 'POST', Operation.client_rpc],
      ['v1/devices/me/rpc/response/1', 'POST', Operation.rpc_reply],
      ['v1/devices/me/claim', 'POST', Operation.claim],
      ['v2/fw/request/1/chunk/0', 'POST', Operation.firmware],
      ['/provision/request', 'POST', Operation.provision],
      ['foo/bar', 'POST', Operation.unknown],
    ];
    for (const [topic, method, operation] of cases) expect([topic, api.classify({ method, updates: undefined, segments: topic.split('/') })]).toEqual([topic, operation]);
  });

  it('reads an attribute request\'s keys from its JSON body and answers {} when none exists, as ThingsBoard does', async () => {
    const { api, reads } = setUp();
    expect(await api.handle(mqttRequest('POST', 'v1/devices/me/attributes/request/5', '{"clientKeys":"a,b","sharedKeys":"c"}')).outcome).toEqual({ kind: 'content', body: {} });
    expect(reads).toEqual([{ client: ['a', 'b'], shared: ['c'] }]);
    expect(await api.handle(mqttRequest('POST', 'v1/devices/me/attributes/request/5', '')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'bad-request' } });
    expect(await api.handle(mqttRequest('POST', 'v1/devices/me/attributes/request/x', '{}')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'bad-request' } });
  });

  it('tells a client-side RPC without a reply in time {"error":"timeout"}, as ThingsBoard does', async () => {
    const { api } = setUp();
    expect(await api.handle(mqttRequest('POST', 'v1/devices/me/rpc/request/1', '{"method":"now","params":{}}')).outcome).toEqual({ kind: 'content', body: { error: 'timeout' } });
  });

  it('refuses a firmware chunk request whose payload is not a size, and subscriptions outside the API', async () => {
    const { api } = setUp();
    expect(await api.handle(mqttRequest('POST', 'v2/fw/request/1/chunk/0', 'lots')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'bad-request' } });
    expect(await api.handle(mqttRequest('GET', 'v1/devices/me/#', '')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'not-found' } });
    expect(await api.handle(mqttRequest('GET', 'v1/devices/me/rpc/response/+', '')).outcome).toEqual({ kind: 'empty' });
  });

  it('reads questions only under v1/devices/me/: the same levels elsewhere are a topic outside the API', async () => {
    const { api, reads } = setUp();
    expect(await api.handle(mqttRequest('POST', 'x/y/z/attributes/request/5', '{}')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'not-found' } });
    expect(await api.handle(mqttRequest('POST', 'v1/devices/other/rpc/request/1', '{"method":"m","params":{}}')).outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'not-found' } });
    expect(reads).toEqual([]);
  });

  it('refuses provisioning from an address blocked for guessing, as the CoAP path does', async () => {
    const { api, dialect } = setUp();
    for (const token of ['guess-1', 'guess-2']) dialect.connect({ username: token, clientId: 'c', certificate: undefined, address: '192.0.2.7', receivedAt: T0 });
    const outcome = await api.handle(mqttRequest('POST', '/provision/request', '{"deviceName":"x","provisionDeviceKey":"k","provisionDeviceSecret":"s"}', true)).outcome;
    expect(outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'too-many-requests' } });
  });

  it('lets a provisioning session publish only its request topic', async () => {
    const { api } = setUp();
    const outcome = await api.handle(mqttRequest('POST', 'v1/devices/me/telemetry', '{"t":1}', true)).outcome;
    expect(outcome).toMatchObject({ kind: 'refused', refusal: { problem: 'forbidden' } });
  });
});
