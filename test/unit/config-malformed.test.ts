// Malformed configurations, as an attacker with the file or the environment writes them: each is refused
// (or, for harmless oddities, warned about) with one line naming the key, never with a crash.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, type LoadResult } from '../../src/config/load.js';
import { schema } from '../../src/config/schema.js';
import { schemaKeys, sweepCases, withValueAt } from '../helpers/config-sweep.js';

function file(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), 'coap2mqtt-malformed-')), 'config.json5');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const NESTED = { a: { b: { c: 1 } } };
const deepObject = (depth: number): string => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

/** A load must end in a result, never a throw (a throw is the CLI's "unexpected failure", exit 1). */
function load(content: unknown, env: NodeJS.ProcessEnv = {}): LoadResult {
  return loadConfig({ file: file(content), env });
}

function errorsOf(result: LoadResult): readonly string[] {
  return result.ok ? [] : result.errors;
}

describe('the wrong types the adversarial run found', () => {
  it.each([
    { what: 'a nested object as devices', content: { devices: NESTED }, key: 'devices', expected: /must be a JSON array/ },
    { what: 'a nested object as firmware.sources', content: { firmware: { sources: NESTED } }, key: 'firmware.sources', expected: /must be a list of "dir", "url", "thingsboard"/ },
    { what: 'a nested object as provision.keys', content: { provision: { keys: NESTED } }, key: 'provision.keys', expected: /must be a JSON array, e\.g\. \[\{"key"/ },
    { what: 'a nested object as thethings.things', content: { thethings: { things: NESTED } }, key: 'thethings.things', expected: /must be a JSON array, e\.g\. \[\{"thingToken"/ },
    { what: 'a nested object as state.dir', content: { state: { dir: NESTED } }, key: 'state.dir', expected: /must be a non-empty string/ },
    { what: 'an object as devices (was silently ignored)', content: { devices: { a: 1 } }, key: 'devices', expected: /must be a JSON array/ },
    { what: 'a nested object as log.components', content: { log: { components: { dtls: NESTED } } }, key: 'log.components', expected: /"dtls": .* is not a level/ },
    { what: 'a nested object as a port', content: { coap: { port: NESTED } }, key: 'coap.port', expected: /must be a port number from 0 to 65535, e\.g\. 5683 \(got \{"a":\{"b":\{"c":1\}\}\}/ },
    { what: 'an object as a port (was "missing from config")', content: { coap: { port: { a: 1 } } }, key: 'coap.port', expected: /must be a port number/ },
    { what: 'a number as a section', content: { coap: 5 }, key: 'coap', expected: /must be an object of settings, e\.g\. \{"host": "::", "port": 5683/ },
    { what: 'a list as a section', content: { dtls: [1] }, key: 'dtls', expected: /must be an object of settings/ },
    { what: 'null as a section', content: { log: null }, key: 'log', expected: /must be an object of settings.*\(got null\)/ },
  ])('$what: one error naming $key', ({ content, key, expected }) => {
    const errors = errorsOf(load(content));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^${key.replace(/\./g, '\\.')}: `));
    expect(errors[0]).toMatch(expected);
  });

  it('refuses a document nested 20,000 deep with one line, without overflowing the stack', () => {
    for (const [text, prefix] of [
      [deepObject(20_000), 'a.a.a.a'],
      [`{devices: ${'['.repeat(20_000)}${']'.repeat(20_000)}}`, 'devices[0][0][0]'],
      [`{log: {components: ${deepObject(20_000)}}}`, 'log.components.a.a'],
    ] as const) {
      const errors = errorsOf(load(text));
      expect(errors).toHaveLength(1);
      expect(errors[0]!.startsWith(prefix)).toBe(true);
      expect(errors[0]).toMatch(/nested more than \d+ levels deep/);
      expect(errors[0]!.length).toBeLessThan(300);
    }
  });
});

describe('an attacker with the config file', () => {
  it('ignores __proto__ and constructor keys, with a warning, and they change nothing', () => {
    const result = load(`{
      "__proto__": { "coap": { "port": "abc" } },
      "coap": { "__proto__": { "port": 1 }, "constructor": { "prototype": { "port": 2 } }, "toString": 3 },
      "constructor": { "prototype": { "x": 1 } },
      "devices": [ { "name": "A", "token": "t", "__proto__": { "type": "x" } } ],
    }`);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.coap.port).toBe(5683);
    expect(result.config.devices).toEqual([expect.objectContaining({ name: 'A', type: 'default', token: 't' })]);
    expect(({} as Record<string, unknown>).port).toBeUndefined();
    expect(result.warnings).toEqual([
      '__proto__: ignored; "__proto__" cannot be a key',
      'coap.__proto__: ignored; "__proto__" cannot be a key',
      'devices[0].__proto__: ignored; "__proto__" cannot be a key',
      'coap.constructor.prototype.port: unknown key, ignored',
      'coap.toString: unknown key, ignored',
      'constructor.prototype.x: unknown key, ignored',
    ]);
  });

  it('gives no device a token through "__proto__", from the file or the environment', () => {
    const devices = '[{ "name": "B", "__proto__": { "token": "u" } }]';
    for (const result of [load(`{ devices: ${devices} }`), loadConfig({ env: { COAP2MQTT_DEVICES: devices } })]) {
      expect(errorsOf(result)).toEqual([expect.stringMatching(/^devices\[0\]\.token \("B"\): missing/)]);
    }
  });

  it('warns when a key is given twice, since only the last one counts', () => {
    const result = load(`{
      devices: [ { name: "A", token: "t" } ],
      coap: { port: 1000, 'port': 2000 },
      devices: [ { name: "B", token: "u" } ],
    }`);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.coap.port).toBe(2000);
    expect(result.warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^coap\.port: given twice in the file; only the last one \(line 3\) counts/),
        expect.stringMatching(/^devices: given twice in the file; only the last one \(line 4\) counts/),
      ]),
    );
  });

  it('keeps every line short, whatever the length of a value or a key', () => {
    const long = 'x'.repeat(100_000);
    const result = load({ coap: { host: long }, upstream: { url: long }, [long]: 1 });
    const devices = load({ devices: [{ name: long, token: 't' }, { name: 'A', token: 't', psk: { identity: long } }] });
    const lines = [result, devices].flatMap((each) => [...errorsOf(each), ...(each.warnings ?? [])]);
    for (const line of lines) expect(line.length).toBeLessThan(400);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^coap\.host: must be an IP address or a host name/),
        expect.stringMatching(/^upstream\.url: must be empty .*\(got "x{20,}…" \(100000 characters\)/),
        expect.stringMatching(/^x{20,}…: unknown key, ignored/),
        expect.stringMatching(/^devices\[0\]\.name: must be the device name.*\(got "x{20,}…" \(100000 characters\)\)/),
        expect.stringMatching(/^devices\[1\]\.psk\.identity \("A"\): must be the PSK identity/),
      ]),
    );
  });

  it('takes 300,000 unknown keys or "__proto__" keys without overflowing the stack', () => {
    const wide = load({ junk: Object.fromEntries(Array.from({ length: 300_000 }, (_, i) => [`k${i}`, 1])) });
    expect(wide.ok && wide.warnings.at(-1)).toBe('299980 more unknown keys, ignored');
    const protos = load(`{ devices: [${'{ "__proto__": 1 },'.repeat(300_000)}] }`);
    expect(protos.warnings).toHaveLength(300_000);
    expect(errorsOf(protos)).toHaveLength(600_000);
  });

  it('names at most 20 unknown keys, then how many more', () => {
    const content = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`junk${i}`, { a: i }]));
    const result = load(content);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.warnings).toHaveLength(21);
    expect(result.warnings[20]).toMatch(/^4980 more unknown keys, ignored/);
  });
});

describe('an attacker with the environment', () => {
  const envOf = (key: string): string => {
    let node: unknown = schema;
    for (const segment of key.split('.')) node = (node as Record<string, unknown>)[segment];
    return (node as { env: string }).env;
  };
  const cases = schemaKeys()
    .filter(({ kind }) => kind === 'list' || kind === 'map' || kind === 'number' || kind === 'boolean')
    .flatMap(({ key, kind }) =>
      ['{"a":{"b":{"c":1}}}', '{"a":1}', '[1]', 'abc', '']
        .filter((value) => !(kind === 'list' && value === '[1]'))
        .map((value) => ({ key, value, env: envOf(key) })),
    );

  it.each([
    { env: 'COAP2MQTT_DEVICES', key: 'devices', value: `${'['.repeat(20_000)}${']'.repeat(20_000)}` },
    { env: 'COAP2MQTT_DEVICES', key: 'devices', value: `[{"name": ${'['.repeat(20_000)}${']'.repeat(20_000)}}]` },
    { env: 'COAP2MQTT_LOG_COMPONENTS', key: 'log.components', value: deepObject(20_000) },
    { env: 'COAP2MQTT_FIRMWARE_SOURCES', key: 'firmware.sources', value: `${'['.repeat(20_000)}${']'.repeat(20_000)}` },
  ])('$env holding JSON nested 20,000 deep: one error naming $key (it overflowed the stack)', ({ env, key, value }) => {
    const errors = errorsOf(loadConfig({ env: { [env]: value } }));
    expect(errors).toEqual([expect.stringMatching(new RegExp(`^${key.replace('.', '\\.')}: must not be nested more than 32 levels deep \\(got .* from ${env}\\)$`))]);
    expect(errors[0]!.length).toBeLessThan(300);
  });

  it.each(cases)('$env=$value: one error naming $key and the variable', ({ key, value, env }) => {
    const result = loadConfig({ env: { [env]: value } });
    const errors = errorsOf(result);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.startsWith(`${key}: `)).toBe(true);
    expect(errors[0]).toContain(`from ${env}`);
  });
});

describe('the sweep: a wrong-typed value in every key of the schema, one at a time', () => {
  it.each(sweepCases())('$key = $wrong: one error naming the key', ({ key, value }) => {
    const result = load(withValueAt({}, key, value));
    const errors = errorsOf(result);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.startsWith(`${key}: `)).toBe(true);
    expect(errors[0]).not.toMatch(/TypeError|RangeError|missing from config|undefined/);
  });
});
