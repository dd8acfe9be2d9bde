import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_DEVICE, loadConfig } from '../../src/config/load.js';
import { redactUrl } from '../../src/log.js';

function file(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-config-')), 'config.json5');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

describe('loadConfig', () => {
  it('runs on defaults alone in embedded mode, with the demo device', () => {
    const result = loadConfig({ env: {} });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.coap).toMatchObject({ host: '::', port: 5683 });
    expect(result.config.upstream.url).toBe('');
    expect(result.config.devices).toEqual([DEMO_DEVICE]);
    expect(result.notices[0]).toMatch(/demo device/);
  });

  it('never adds the demo device when a real upstream is configured', () => {
    const result = loadConfig({ file: file({ upstream: { url: 'mqtt://tb.local:1883', accessToken: 'x' } }), env: {} });
    expect(result.ok && result.config.devices).toEqual([]);
  });

  it('takes environment variables over the file, coercing numbers and the device list', () => {
    const devices = [{ name: 'A', token: 'ta' }];
    const result = loadConfig({
      file: file({ coap: { port: 1000 } }),
      env: { COAP2MQTT_COAP_PORT: '2000', COAP2MQTT_COAP_PIGGYBACK_WINDOW_MS: '100', COAP2MQTT_DEVICES: JSON.stringify(devices) },
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.coap.port).toBe(2000);
    expect(result.config.coap.piggybackWindowMs).toBe(100);
    expect(result.config.devices).toEqual([{ name: 'A', type: 'default', token: 'ta' }]);
  });

  it('reports a device list in the environment that is not JSON', () => {
    const result = loadConfig({ env: { COAP2MQTT_DEVICES: 'not json' } });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]).toMatch(/^devices: must be a JSON array.*COAP2MQTT_DEVICES/);
  });

  it('hides sensitive values in errors', () => {
    const result = loadConfig({ file: file({ upstream: { url: 'mqtt://x', accessToken: 12345 } }), env: {} });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors[0]).toMatch(/^upstream\.accessToken: must be of type String \(got \(hidden\)/);
      expect(result.errors.join()).not.toContain('12345');
    }
    // The device list holds tokens and PSKs: a malformed one is reported without its content.
    const devices = loadConfig({ env: { COAP2MQTT_DEVICES: '[{"name":"A","psk":{"identity":"a","key":"s3cret-psk"}' } });
    expect(devices.ok).toBe(false);
    if (!devices.ok) {
      expect(devices.errors[0]).toMatch(/^devices: must be a JSON array.*\(got \(hidden\) from COAP2MQTT_DEVICES\)/);
      expect(devices.errors.join()).not.toContain('s3cret-psk');
    }
  });

  it('checks combinations no single key can', () => {
    const result = loadConfig({
      file: file({
        upstream: { url: 'mqtt://tb.local', accessToken: 'a', username: 'b', cert: '/nope/cert.pem', reconnectMinMs: 5000, reconnectMaxMs: 1000 },
      }),
      env: {},
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^upstream\.username: set either upstream\.accessToken .* not both/),
        expect.stringMatching(/^upstream\.cert: only used with mqtts:\/\//),
        expect.stringMatching(/^upstream\.cert: cannot read file "\/nope\/cert\.pem"/),
        expect.stringMatching(/^upstream\.cert \/ upstream\.key: .* needs both/),
        expect.stringMatching(/^upstream\.reconnectMinMs: must not exceed upstream\.reconnectMaxMs/),
      ]),
    );
  });

  it('checks the firmware sources, the ThingsBoard URL and the image directory', () => {
    const bad = loadConfig({ file: file({ firmware: { sources: ['dir', 'ftp'], thingsboardUrl: 'tb.local' } }), env: {} });
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.errors).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^firmware\.sources: must be a list of "dir", "url", "thingsboard"/),
          expect.stringMatching(/^firmware\.thingsboardUrl: must be empty or an http:\/\/ or https:\/\/ URL/),
        ]),
      );
    }
    const fromEnv = loadConfig({ env: { COAP2MQTT_FIRMWARE_SOURCES: '["thingsboard"]', COAP2MQTT_FIRMWARE_DIR: '/nope/images' } });
    expect(fromEnv.ok).toBe(true);
    if (!fromEnv.ok) return;
    expect(fromEnv.config.firmware.sources).toEqual(['thingsboard']);
    expect(fromEnv.warnings).toEqual([expect.stringMatching(/^firmware\.dir: cannot read directory "\/nope\/images"/)]);
  });

  it('checks thethings.io things and the activation provision key', () => {
    const result = loadConfig({
      file: file({
        devices: [{ name: 'Boiler-7', token: 't' }],
        thethings: {
          enabled: true,
          things: [{ thingToken: 'a', device: 'Boiler-7' }, { thingToken: 'a', device: 'Ghost' }, { device: 'Boiler-7' }],
          provisionKey: 'k',
        },
      }),
      env: {},
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual([
      expect.stringMatching(/^thethings\.things\[1\]\.thingToken: the same thing token appears twice/),
      expect.stringMatching(/^thethings\.things\[2\]: must be an object like/),
      expect.stringMatching(/^thethings\.provisionKey \/ thethings\.provisionSecret: set both/),
    ]);
    expect(result.warnings).toContainEqual(expect.stringMatching(/^thethings\.things\[1\]\.device: "Ghost" is not in devices/));
  });

  it('keeps the embedded broker on loopback, since it has no authentication', () => {
    const result = loadConfig({ env: { COAP2MQTT_EMBEDDED_BROKER_HOST: '0.0.0.0' } });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]).toMatch(/^embeddedBroker\.host: must be a loopback address/);
  });

  it('warns about unknown keys and device fields instead of failing', () => {
    const result = loadConfig({ file: file({ upstrem: { url: 'x' }, devices: [{ name: 'A', token: 't', tokn: 'y' }] }), env: {} });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.warnings).toEqual(
      expect.arrayContaining([expect.stringMatching(/^upstrem\.url: unknown key, ignored \(did you mean upstream\.url\?\)/), expect.stringMatching(/^devices\[0\]\.tokn \("A"\): unknown field/)]),
    );
  });
});

describe('the shipped example', () => {
  it('is valid, complete and warning-free', () => {
    const result = loadConfig({ file: join(import.meta.dirname, '../../config/example.json5'), env: {} });
    expect(result.ok && result.warnings).toEqual([]);
  });
});

describe('redactUrl', () => {
  it('strips credentials from URLs before they are logged', () => {
    expect(redactUrl('mqtts://user:secret@tb.example.com:8883')).toBe('mqtts://tb.example.com:8883');
  });
});

describe('DTLS devices and settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-dtls-config-'));
  const pem = join(dir, 'x.pem');
  writeFileSync(pem, 'not checked here: OpenSSL reads it at start');
  const load = (config: Record<string, unknown>) => loadConfig({ file: file(config), env: {} });
  const errorsOf = (config: Record<string, unknown>) => {
    const result = load(config);
    return result.ok ? [] : result.errors;
  };

  it('accepts PSK (text or hex) and certificate devices without tokens, normalising fingerprints', () => {
    const result = load({
      dtls: { enabled: true, cert: pem, key: pem, ca: pem },
      devices: [
        { name: 'A', psk: { identity: 'a', key: 'sixteen-byte-key' } },
        { name: 'B', psk: { identity: 'b', keyHex: '00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff' } },
        { name: 'C', cert: { fingerprint256: 'AB:'.repeat(31) + 'AB' } },
        { name: 'D', cert: { cn: 'sensor-d' } },
      ],
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const [a, b, c, d] = result.config.devices;
    expect(a).toMatchObject({ token: undefined, psk: { identity: 'a', key: Buffer.from('sixteen-byte-key') } });
    expect(b!.psk!.key).toEqual(Buffer.from('00112233445566778899aabbccddeeff', 'hex'));
    expect(c!.cert).toEqual({ fingerprint256: 'ab'.repeat(32) });
    expect(d!.cert).toEqual({ cn: 'sensor-d' });
  });

  it('names the field and never echoes a key when a device entry is wrong', () => {
    const errors = errorsOf({
      dtls: { enabled: true },
      devices: [
        { name: 'A' },
        { name: 'B', psk: { identity: 'b' } },
        { name: 'C', psk: { identity: 'c', keyHex: 'xyz-secret' } },
        { name: 'D', cert: { fingerprint256: 'abc', cn: 'd' } },
        { name: 'E', cert: { fingerprint256: 'abc' } },
        { name: 'F', psk: { identity: 'f', key: 'first-secret-key' } },
        { name: 'G', psk: { identity: 'f', key: 'another-secret-key' } },
      ],
    });
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^devices\[0\]\.token.*missing.*psk or cert/),
        expect.stringMatching(/^devices\[1\]\.psk\.key \("B"\): missing/),
        expect.stringMatching(/^devices\[2\]\.psk\.keyHex.*must be an even number of hex digits/),
        expect.stringMatching(/^devices\[3\]\.cert.*exactly one of fingerprint256.*or cn/),
        expect.stringMatching(/^devices\[4\]\.cert\.fingerprint256.*must be the certificate's SHA-256 fingerprint/),
        expect.stringMatching(/^devices\[6\]\.psk\.identity.*same as devices\[5\]/),
      ]),
    );
    expect(errors.join('\n')).not.toMatch(/secret/);
  });

  it('warns about a short PSK and about credentials while DTLS is off', () => {
    const result = load({ devices: [{ name: 'A', token: 't', psk: { identity: 'a', key: 'short' } }] });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.warnings).toEqual(
      expect.arrayContaining([expect.stringMatching(/only 5 bytes.*openssl rand -hex 16/), expect.stringMatching(/dtls\.enabled is false/)]),
    );
  });

  it('refuses DTLS settings that cannot work, saying what to set', () => {
    expect(errorsOf({ dtls: { enabled: true }, devices: [{ name: 'A', token: 't' }] })).toEqual([
      expect.stringMatching(/^dtls\.enabled: nothing to authenticate with/),
    ]);
    expect(errorsOf({ dtls: { enabled: true, cert: pem }, devices: [{ name: 'A', token: 't' }] })).toEqual([
      expect.stringMatching(/^dtls\.cert \/ dtls\.key: .*needs both/),
    ]);
    expect(errorsOf({ dtls: { enabled: true, cert: pem, key: pem }, devices: [{ name: 'A', cert: { cn: 'a' } }] })).toEqual([
      expect.stringMatching(/^device "A" cert\.cn: .*set dtls\.ca/),
    ]);
    expect(errorsOf({ dtls: { enabled: true, cert: join(dir, 'missing.pem'), key: pem }, devices: [{ name: 'A', token: 't' }] })).toEqual([
      expect.stringMatching(/^dtls\.cert: cannot read file/),
    ]);
    expect(errorsOf({ dtls: { enabled: true, port: 5683 }, devices: [{ name: 'A', psk: { identity: 'a', key: 'sixteen-byte-key' } }] })).toEqual([
      expect.stringMatching(/^dtls\.port: must differ from coap\.port/),
    ]);
  });

  it('bounds unfinished handshakes in total and per address, and warns when one address could take them all', () => {
    const device = { name: 'A', psk: { identity: 'a', key: 'sixteen-byte-key' } };
    const defaults = load({ dtls: { enabled: true }, devices: [device] });
    expect(defaults.ok && defaults.config.dtls).toMatchObject({ maxHandshakes: 512, maxHandshakesPerAddress: 64 });
    const lopsided = load({ dtls: { enabled: true, maxHandshakes: 100, maxHandshakesPerAddress: 200 }, devices: [device] });
    expect(lopsided.ok && lopsided.warnings).toEqual([
      expect.stringMatching(/^dtls\.maxHandshakesPerAddress \(200\) is above dtls\.maxHandshakes \(100\): one address can take every/),
    ]);
    expect(errorsOf({ dtls: { enabled: true, maxHandshakes: 4 }, devices: [device] })).toEqual([expect.stringMatching(/^dtls\.maxHandshakes: /)]);
  });
});

describe('MQTT device ports', () => {
  const errorsOf = (env: Record<string, string>, config: Record<string, unknown> = {}): string[] => {
    const result = loadConfig({ file: file(config), env: { COAP2MQTT_MQTT_DEVICES_ENABLED: 'true', ...env } });
    return result.ok ? [] : [...result.errors];
  };

  it('refuses the embedded broker\'s port for plain MQTT or TLS, naming both keys and the way out', () => {
    // The defaults: upstream.url empty, so the embedded broker takes 1883, the port devices expect too.
    expect(errorsOf({})).toEqual([expect.stringMatching(/^mqttDevices\.port: 1883 is also the embedded broker's port \(embeddedBroker\.port\).*embeddedBroker\.port 1884/)]);
    expect(errorsOf({ COAP2MQTT_MQTT_DEVICES_PORT: '1900', COAP2MQTT_EMBEDDED_BROKER_PORT: '1900' })).toEqual([
      expect.stringMatching(/^mqttDevices\.port: 1900 .*embeddedBroker\.port/),
    ]);
    expect(errorsOf({ COAP2MQTT_EMBEDDED_BROKER_PORT: '1884' })).toEqual([]);
    expect(errorsOf({ COAP2MQTT_MQTT_DEVICES_PORT: '0', COAP2MQTT_EMBEDDED_BROKER_PORT: '0' })).toEqual([]);
    const pem = file('-----BEGIN CERTIFICATE-----');
    expect(errorsOf({ COAP2MQTT_EMBEDDED_BROKER_PORT: '8883', COAP2MQTT_MQTT_DEVICES_PORT: '1883' }, { mqttDevices: { tls: true, cert: pem, key: pem } })).toEqual([
      expect.stringMatching(/^mqttDevices\.tlsPort: 8883 .*embeddedBroker\.port/),
    ]);
    // With a real upstream there is no embedded broker: 1883 is free for devices.
    expect(errorsOf({ COAP2MQTT_UPSTREAM_URL: 'mqtt://tb.example.com:1883', COAP2MQTT_UPSTREAM_ACCESS_TOKEN: 'gw' })).toEqual([]);
  });

  it('refuses an upstream.url on this machine at the device port: the gateway would connect to itself', () => {
    const upstream = (url: string) => ({ COAP2MQTT_UPSTREAM_URL: url, COAP2MQTT_UPSTREAM_ACCESS_TOKEN: 'gw' });
    for (const url of ['mqtt://127.0.0.1:1883', 'mqtt://localhost', 'mqtt://[::1]:1883']) {
      expect(errorsOf(upstream(url)), url).toEqual([expect.stringMatching(/^mqttDevices\.port: 1883 is the port of upstream\.url on this machine .*connect to its own device listener/)]);
    }
    expect(errorsOf({ ...upstream('mqtt://127.0.0.1:1884') })).toEqual([]);
    expect(errorsOf({ ...upstream('mqtt://127.0.0.1:1883'), COAP2MQTT_MQTT_DEVICES_PORT: '1884' })).toEqual([]);
  });

  it('accepts both ports when the device listener is off', () => {
    expect(errorsOf({ COAP2MQTT_MQTT_DEVICES_ENABLED: 'false' })).toEqual([]);
  });
});

describe('the shipped example, key by key', () => {
  it('mentions every configuration key, so a technician finds each one there', async () => {
    const { readFileSync } = await import('node:fs');
    const { SETTINGS } = await import('../../src/config/schema.js');
    const text = readFileSync(join(import.meta.dirname, '../../config/example.json5'), 'utf8');
    const missing = [...SETTINGS.keys()].filter((key) => !new RegExp(`\\b${key.split('.').at(-1)}:`).test(text));
    expect(missing).toEqual([]);
  });
});
