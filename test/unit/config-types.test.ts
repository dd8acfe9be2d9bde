// The configuration's TypeScript types are read off the convict schema, so the two cannot drift apart. The
// compile-time half of this test is the `@ts-expect-error` lines: `npm run typecheck` (and `npm test`,
// through pretest) fails if any of them stops being an error, i.e. if the link between schema and types
// is ever cut (a hand-written interface again, a cast, a setting whose default escapes its format).
import { describe, expect, it } from 'vitest';
import { integer, oneOf, PORT, TEXT } from '../../src/config/formats.js';
import type { CoapConfig, GatewayConfig, LogLevel, OutboxConfig } from '../../src/config/load.js';
import { schema, SETTINGS, type RawConfig } from '../../src/config/schema.js';
import { setting, type ConfigOf } from '../../src/config/setting.js';

/** true only when A and B are the same type. */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(verdict: Same<A, B>): Same<A, B> => verdict;

describe('configuration types come from the schema', () => {
  it('refuses a default that does not fit its format, at compile time', () => {
    const fits = setting({ doc: 'A port.', format: PORT, default: 5683, env: 'COAP2MQTT_X_PORT' });
    // @ts-expect-error a port's default must be a number
    setting({ doc: 'A port.', format: PORT, default: '5683', env: 'COAP2MQTT_X_PORT' });
    // @ts-expect-error a text setting's default must be text
    setting({ doc: 'A path.', format: TEXT, default: 0, env: 'COAP2MQTT_X_PATH' });
    // @ts-expect-error an enumerated setting's default must be one of its values
    setting({ doc: 'A mode.', format: oneOf(['spill', 'always']), default: 'sometimes', env: 'COAP2MQTT_X_MODE' });
    // @ts-expect-error every setting names its environment variable, under COAP2MQTT_
    setting({ doc: 'A count.', format: integer(0, 9), default: 1, env: 'X_COUNT' });
    expect(fits.default).toBe(5683);
  });

  it('gives each key the type of its format, and no key the schema lacks', () => {
    const section = {
      port: setting({ doc: 'A port.', format: PORT, default: 1, env: 'COAP2MQTT_X_PORT' }),
      mode: setting({ doc: 'A mode.', format: oneOf(['spill', 'always']), default: 'spill', env: 'COAP2MQTT_X_MODE' }),
    };
    expect(same<ConfigOf<typeof section>, { readonly port: number; readonly mode: 'spill' | 'always' }>(true)).toBe(true);
    expect(Object.keys(section)).toEqual(['port', 'mode']);
    const values: ConfigOf<typeof section> = { port: 1, mode: 'always' };
    // @ts-expect-error a key added to the type but not the schema does not exist
    expect(values.host).toBeUndefined();
    // @ts-expect-error a key of the schema cannot be left out of a value of its type
    const missing: ConfigOf<typeof section> = { port: 1 };
    expect(missing.port).toBe(1);
  });

  it('types the gateway configuration as the schema says', () => {
    expect(same<CoapConfig, ConfigOf<typeof schema.coap>>(true)).toBe(true);
    expect(same<keyof GatewayConfig, keyof typeof schema>(true)).toBe(true);
    expect(same<keyof RawConfig['upstream'], keyof typeof schema.upstream>(true)).toBe(true);
    expect(same<OutboxConfig['mode'], 'spill' | 'always'>(true)).toBe(true);
    expect(same<GatewayConfig['log']['level'], LogLevel>(true)).toBe(true);
    expect(same<GatewayConfig['firmware']['sources'], readonly ('dir' | 'url' | 'thingsboard')[]>(true)).toBe(true);
    // @ts-expect-error the verdict is false when the types differ
    expect(same<CoapConfig['port'], string>(true)).toBe(true);
    expect(SETTINGS.get('coap.port')?.default).toBe(5683);
  });
});
