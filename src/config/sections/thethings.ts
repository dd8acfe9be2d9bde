// thethings.io's CoAP API: its settings, and the thing tokens checked into typed entries.
import { BOOLEAN, integer, TEXT, THING_LIST } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';
import { shorten, showValue } from '../shape.js';
import type { DeviceEntry } from './devices.js';

export const thethings = {
  enabled: setting({
    doc: 'Accept thethings.io\'s CoAP API under /v2/things (activate, write, read, subscribe) for devices written for thethings.io, beside ThingsBoard\'s /api/v1 paths.',
    format: BOOLEAN,
    default: false,
    env: 'COAP2MQTT_THETHINGS_ENABLED',
  }),
  things: setting({
    doc: 'Thing tokens of devices, as [{"thingToken": "...", "device": "Boiler-7", "activationCode": "..."}]: device is a name in devices; activationCode (optional) is what POST /v2/things exchanges for the thing token. A registry access token also works as a thing token without an entry here.',
    format: THING_LIST,
    default: [],
    env: 'COAP2MQTT_THETHINGS_THINGS',
    sensitive: true,
  }),
  provisionKey: setting({
    doc: 'Activation codes not in thethings.things are provisioned with this provision key (and thethings.provisionSecret), as a device named after the code, whose issued access token becomes the thing token; empty: unknown codes are refused (4.01).',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_THETHINGS_PROVISION_KEY',
  }),
  provisionSecret: setting({
    doc: 'The secret that goes with thethings.provisionKey.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_THETHINGS_PROVISION_SECRET',
    sensitive: true,
  }),
  valuesPerKey: setting({
    doc: 'Recent values kept per device and key for reads (GET /v2/things/{thingToken}/resources/{key}); ThingsBoard\'s history is not reachable from the gateway.',
    format: integer(1, 10_000),
    default: 100,
    env: 'COAP2MQTT_THETHINGS_VALUES_PER_KEY',
  }),
  maxSeries: setting({
    doc: 'Device-and-key series kept for reads, all devices together; the least recently written is forgotten beyond it.',
    format: integer(1, 1_000_000),
    default: 10_000,
    env: 'COAP2MQTT_THETHINGS_MAX_SERIES',
  }),
};

export interface ThingEntry {
  readonly thingToken: string;
  readonly device: string;
  readonly activationCode: string | undefined;
}

/** thethings.things as the checks leave them: typed entries. */
export type ThethingsConfig = Omit<ConfigOf<typeof thethings>, 'things'> & { readonly things: readonly ThingEntry[] };

export function checkThings(config: { readonly thethings: ConfigOf<typeof thethings> }, devices: readonly DeviceEntry[], errors: string[], warnings: string[]): ThingEntry[] {
  const { enabled, provisionKey, provisionSecret } = config.thethings;
  const list = config.thethings.things;
  const things: ThingEntry[] = [];
  const tokens = new Set<string>();
  const codes = new Set<string>();
  list.forEach((entry, index) => {
    const at = `thethings.things[${index}]`;
    const record = entry !== null && typeof entry === 'object' && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const { thingToken, device, activationCode } = record ?? {};
    if (!record || typeof thingToken !== 'string' || thingToken === '' || typeof device !== 'string' || device === '') {
      errors.push(`${at}: must be an object like {"thingToken": "...", "device": "Boiler-7", "activationCode": "..."} with a non-empty thingToken and device`);
      return;
    }
    if (activationCode !== undefined && (typeof activationCode !== 'string' || activationCode === '')) {
      errors.push(`${at}.activationCode: must be a non-empty string when given`);
      return;
    }
    if (tokens.has(thingToken)) errors.push(`${at}.thingToken: the same thing token appears twice`);
    if (activationCode !== undefined && codes.has(activationCode)) errors.push(`${at}.activationCode: the same activation code appears twice`);
    tokens.add(thingToken);
    if (activationCode !== undefined) codes.add(activationCode);
    if (!devices.some((known) => known.name === device)) warnings.push(`${at}.device: ${showValue(device)} is not in devices; its thing token is refused until it is`);
    for (const field of Object.keys(record)) {
      if (!['thingToken', 'device', 'activationCode'].includes(field)) warnings.push(`${at}.${shorten(field)}: unknown field, ignored (known: thingToken, device, activationCode)`);
    }
    things.push({ thingToken, device, activationCode });
  });
  if ((provisionKey === '') !== (provisionSecret === '')) {
    errors.push('thethings.provisionKey / thethings.provisionSecret: set both (activation by provisioning) or neither');
  }
  if (!enabled && (things.length > 0 || provisionKey !== '')) warnings.push('thethings.things: only used when thethings.enabled is true');
  return things;
}
