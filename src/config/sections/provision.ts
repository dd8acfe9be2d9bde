// Device provisioning: its settings, and the provision keys checked into typed pairs.
import { integer, NON_EMPTY_STRING, oneOf, PROVISION_KEY_LIST } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';
import { shorten, showValue } from '../shape.js';

export const provision = {
  mode: setting({
    doc: 'What POST /api/v1/provision does. "upstream": forward the request to ThingsBoard over a separate short MQTT connection (username "provision") and register the credentials it issues; "local": check the request against provision.keys and issue a token here, announcing the device with v1/gateway/connect; "off": answer 4.03. Provisioned devices are added to devicesFile.',
    format: oneOf(['upstream', 'local', 'off']),
    default: 'upstream',
    env: 'COAP2MQTT_PROVISION_MODE',
  }),
  keys: setting({
    doc: 'For provision.mode "local": the provision key/secret pairs devices may present, as [{"key": "...", "secret": "...", "type": "thermostat"}]; type is the device profile the new devices get (default "default").',
    format: PROVISION_KEY_LIST,
    default: [],
    env: 'COAP2MQTT_PROVISION_KEYS',
    sensitive: true,
  }),
  deviceType: setting({
    doc: 'For provision.mode "upstream": the device profile the gateway names when it announces a device ThingsBoard provisioned (ThingsBoard has already created it with its provision profile; this matters only if it was deleted since).',
    format: NON_EMPTY_STRING,
    default: 'default',
    env: 'COAP2MQTT_PROVISION_DEVICE_TYPE',
  }),
  namePrefix: setting({
    doc: 'A provisioning request without deviceName gets the name <namePrefix><8 random hex digits>, which the gateway logs and registers (ThingsBoard would invent a name it never reveals).',
    format: NON_EMPTY_STRING,
    default: 'coap-',
    env: 'COAP2MQTT_PROVISION_NAME_PREFIX',
  }),
  timeoutMs: setting({
    doc: 'How long to wait for ThingsBoard\'s answer on /provision/response before answering the device 5.04.',
    format: integer(1000, 120_000),
    default: 10_000,
    env: 'COAP2MQTT_PROVISION_TIMEOUT_MS',
  }),
  maxConcurrent: setting({
    doc: 'Provisioning requests handled at once (each opens its own MQTT connection upstream); more are answered 5.03 with Max-Age.',
    format: integer(1, 100),
    default: 4,
    env: 'COAP2MQTT_PROVISION_MAX_CONCURRENT',
  }),
};

/** provision.keys as typed pairs; secrets are never echoed back, not even in errors. */
/** A provision key/secret pair for provision.mode "local", and the profile of the devices it creates. */
export interface ProvisionKey {
  readonly key: string;
  readonly secret: string;
  readonly type: string;
}

/** provision.keys as the checks leave them: typed pairs. */
export type ProvisionConfig = Omit<ConfigOf<typeof provision>, 'keys'> & { readonly keys: readonly ProvisionKey[] };

export function checkProvision(config: { readonly provision: ConfigOf<typeof provision> }, errors: string[], warnings: string[]): ProvisionKey[] {
  const { mode } = config.provision;
  const list = config.provision.keys;
  const keys: ProvisionKey[] = [];
  const seen = new Set<string>();
  list.forEach((entry, index) => {
    const at = `provision.keys[${index}]`;
    const record = entry !== null && typeof entry === 'object' && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const { key, secret, type = 'default' } = record ?? {};
    if (!record || typeof key !== 'string' || key === '' || typeof secret !== 'string' || secret === '') {
      errors.push(`${at}: must be an object like {"key": "...", "secret": "...", "type": "thermostat"} with a non-empty key and secret`);
      return;
    }
    if (typeof type !== 'string' || type.trim() === '') {
      errors.push(`${at}.type: must be a device profile name (got ${showValue(type)})`);
      return;
    }
    if (seen.has(key)) {
      errors.push(`${at}.key: the same provision key appears twice; each key has one secret`);
      return;
    }
    seen.add(key);
    for (const field of Object.keys(record)) {
      if (!['key', 'secret', 'type'].includes(field)) warnings.push(`${at}.${shorten(field)}: unknown field, ignored (known: key, secret, type)`);
    }
    keys.push({ key, secret, type });
  });
  if (mode === 'local' && list.length === 0) {
    errors.push('provision.keys: provision.mode is "local" but no keys are configured; add [{"key": "...", "secret": "..."}] or set provision.mode "upstream" or "off"');
  }
  if (mode !== 'local' && list.length > 0) warnings.push(`provision.keys: only used when provision.mode is "local" (it is "${mode}")`);
  return keys;
}
