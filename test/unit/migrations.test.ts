import JSON5 from 'json5';
import { describe, expect, it } from 'vitest';
import { migrateEnv, migrateObject, migrateText, RENAMES, type Rename } from '../../src/config/migrations.js';
import { schema } from '../../src/config/schema.js';

const MOVE: Rename = { from: 'mqtt.url', to: 'upstream.url', since: '9.9.9', fromEnv: 'OLD_URL', toEnv: 'NEW_URL', why: 'test' };

describe('renamed configuration keys', () => {
  it('point from a key that no longer exists to one that does', () => {
    const has = (path: string) => path.split('.').reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], schema) !== undefined;
    for (const rename of RENAMES) {
      expect(has(rename.from), rename.from).toBe(false);
      expect(has(rename.to), rename.to).toBe(true);
    }
  });

  it('moves a value to its new name, and ignores the old one when both are set', () => {
    expect(migrateObject({ coap: { port: 1, maxPayloadBytes: 2 } })).toEqual({
      value: { coap: { port: 1, maxRequestBodyBytes: 2 } },
      applied: [{ rename: RENAMES[0], outcome: 'moved' }],
    });
    expect(migrateObject({ coap: { maxPayloadBytes: 2, maxRequestBodyBytes: 3 } }).value).toEqual({ coap: { maxRequestBodyBytes: 3 } });
    expect(migrateObject({ coap: { port: 1 } }).applied).toEqual([]);
  });

  it('renames in place in the text, keeping comments, quotes and layout', () => {
    const text = `{
  // CoAP side
  coap: { "maxPayloadBytes": 4096 /* 4 KiB */, port: 5683 },
}`;
    expect(migrateText(text)).toEqual({ text: text.replace('"maxPayloadBytes"', '"maxRequestBodyBytes"'), keptComments: true });
    expect(migrateText('{ coap: { port: 5683 } }')).toBeUndefined();
  });

  it('writes the file afresh when a key moves to another object (comments stay in the backup)', () => {
    const migrated = migrateText('{ // old layout\n mqtt: { url: "mqtt://tb:1883" } }', [MOVE])!;
    expect(migrated.keptComments).toBe(false);
    expect(JSON5.parse(migrated.text)).toEqual({ mqtt: {}, upstream: { url: 'mqtt://tb:1883' } });
  });

  it('falls back to a rewrite when the in-place edit would touch another key of the same name', () => {
    const text = '{ coap: { maxPayloadBytes: 1 }, other: { maxPayloadBytes: 2 } }';
    const migrated = migrateText(text)!;
    expect(migrated.keptComments).toBe(false);
    expect(JSON5.parse(migrated.text)).toEqual({ coap: { maxRequestBodyBytes: 1 }, other: { maxPayloadBytes: 2 } });
  });

  it('carries an old environment variable over with a warning, unless the new one is set', () => {
    const moved = migrateEnv({ COAP2MQTT_COAP_MAX_PAYLOAD_BYTES: '100', PATH: '/bin' });
    expect(moved.env).toEqual({ COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES: '100', PATH: '/bin' });
    expect(moved.warnings).toEqual([expect.stringMatching(/^COAP2MQTT_COAP_MAX_PAYLOAD_BYTES: renamed COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES/)]);
    const both = migrateEnv({ COAP2MQTT_COAP_MAX_PAYLOAD_BYTES: '100', COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES: '200' });
    expect(both.env).toEqual({ COAP2MQTT_COAP_MAX_REQUEST_BODY_BYTES: '200' });
    expect(both.warnings[0]).toMatch(/ignored/);
  });
});
