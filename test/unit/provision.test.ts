import net from 'node:net';
import { Aedes } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { parseFirmwareQuery, parseProvisionAnswer, parseProvisionRequest } from '../../src/payload/provision.js';
import { requestProvisioning } from '../../src/upstream/provision-client.js';

const body = (value: unknown): Buffer => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));

describe('parseProvisionRequest', () => {
  it('reads ThingsBoard\'s request, defaulting credentialsType and keeping unknown fields for upstream', () => {
    const parsed = parseProvisionRequest(body({ deviceName: 'A', provisionDeviceKey: 'k', provisionDeviceSecret: 's', extra: 1 }));
    expect(parsed).toEqual({
      ok: true,
      value: {
        deviceName: 'A',
        provisionDeviceKey: 'k',
        provisionDeviceSecret: 's',
        credentialsType: 'ACCESS_TOKEN',
        token: undefined,
        body: { deviceName: 'A', provisionDeviceKey: 'k', provisionDeviceSecret: 's', extra: 1 },
      },
    });
  });

  it.each([
    ['', /empty body/],
    ['{"provisionDeviceKey":', /not valid JSON/],
    ['[1]', /JSON object/],
    [{ provisionDeviceSecret: 's' }, /provisionDeviceKey/],
    [{ provisionDeviceKey: 'k' }, /provisionDeviceSecret/],
    [{ provisionDeviceKey: 'k', provisionDeviceSecret: 's', deviceName: 7 }, /deviceName/],
    [{ provisionDeviceKey: 'k', provisionDeviceSecret: 's', credentialsType: 'LWM2M' }, /credentialsType/],
    [{ provisionDeviceKey: 'k', provisionDeviceSecret: 's', token: 'a/b' }, /token/],
  ])('refuses %j', (value, reason) => {
    const parsed = parseProvisionRequest(body(value));
    expect(parsed.ok).toBe(false);
    expect(parsed.ok ? '' : parsed.error).toMatch(reason);
  });

  it('treats an empty deviceName as missing', () => {
    const parsed = parseProvisionRequest(body({ deviceName: ' ', provisionDeviceKey: 'k', provisionDeviceSecret: 's' }));
    expect(parsed.ok && parsed.value.deviceName).toBeUndefined();
  });
});

describe('parseProvisionAnswer', () => {
  it('reads success and failure, and nothing else', () => {
    expect(parseProvisionAnswer(body({ credentialsType: 'ACCESS_TOKEN', credentialsValue: 't', status: 'SUCCESS' }))).toMatchObject({
      status: 'SUCCESS',
      credentialsValue: 't',
    });
    expect(parseProvisionAnswer(body({ errorMsg: 'no', status: 'NOT_FOUND' }))).toMatchObject({ status: 'NOT_FOUND', errorMsg: 'no' });
    expect(parseProvisionAnswer(body({ status: 'SUCCESS' }))).toBeUndefined();
    expect(parseProvisionAnswer(body('garbage'))).toBeUndefined();
  });
});

describe('parseFirmwareQuery', () => {
  it('reads title, version, size and chunk', () => {
    expect(parseFirmwareQuery(['title=fw', 'version=1.0', 'size=512', 'chunk=3'])).toEqual({
      ok: true,
      value: { title: 'fw', version: '1.0', size: 512, chunk: 3 },
    });
    expect(parseFirmwareQuery([])).toEqual({ ok: true, value: { title: undefined, version: undefined, size: 0, chunk: 0 } });
  });

  it('refuses sizes and chunks that are not whole numbers', () => {
    expect(parseFirmwareQuery(['size=-1'])).toEqual({ ok: false, error: 'size must be a whole number (got "-1")' });
    expect(parseFirmwareQuery(['chunk=1.5']).ok).toBe(false);
  });
});

describe('requestProvisioning', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
  });

  /** An aedes broker that plays ThingsBoard's provisioning and records who connected. */
  async function provisioningBroker(answer: string | undefined) {
    const broker = await Aedes.createBroker();
    const logins: Array<{ username: string | undefined; password: string | undefined }> = [];
    const disconnects: string[] = [];
    broker.authenticate = (client, username, password, done) => {
      logins.push({ username, password: password?.toString() });
      done(null, true);
    };
    broker.on('clientDisconnect', (client) => disconnects.push(client.id));
    broker.on('publish', (packet, client) => {
      if (client && packet.topic === '/provision/request' && answer !== undefined) {
        broker.publish({ cmd: 'publish', topic: '/provision/response', payload: Buffer.from(answer), qos: 1, dup: false, retain: false }, () => {});
      }
    });
    const server = net.createServer(broker.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    close = async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    };
    return { url: `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`, logins, disconnects };
  }

  it('asks on a connection of its own as user "provision", without a password, and closes it after the answer', async () => {
    const broker = await provisioningBroker('{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN","credentialsValue":"t"}');
    const result = await requestProvisioning({ url: broker.url, upstream: { ca: '', connectTimeoutMs: 2000 }, timeoutMs: 2000 }, '{"deviceName":"A"}');
    expect(result.kind).toBe('answered');
    expect(result.kind === 'answered' && result.payload.toString()).toContain('"credentialsValue":"t"');
    expect(broker.logins).toEqual([{ username: 'provision', password: undefined }]);
    await expect.poll(() => broker.disconnects.length).toBe(1);
  });

  it('times out when nobody answers', async () => {
    const broker = await provisioningBroker(undefined);
    const result = await requestProvisioning({ url: broker.url, upstream: { ca: '', connectTimeoutMs: 2000 }, timeoutMs: 300 }, '{}');
    expect(result).toEqual({ kind: 'timeout' });
  });

  it('says why when the broker cannot be reached', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const result = await requestProvisioning({ url: `mqtt://127.0.0.1:${port}`, upstream: { ca: '', connectTimeoutMs: 1000 }, timeoutMs: 1000 }, '{}');
    expect(result).toEqual({ kind: 'unreachable', reason: 'connection refused' });
  });
});
