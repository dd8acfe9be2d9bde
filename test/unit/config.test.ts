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
