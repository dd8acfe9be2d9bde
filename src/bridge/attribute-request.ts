import { keyedRecord } from '../json-safety.js';
import type { AttributeSet, Device, JsonValue } from '../model.js';
import { Topic, attributeRequestMessage, type AttributeAnswer } from '../upstream/gateway-api.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { BridgeContext } from './context.js';

export interface AttributeKeys {
  readonly client: readonly string[];
  readonly shared: readonly string[];
}

export type AttributeReadOutcome =
  /** Only scopes with something found are present. */
  | { readonly status: 'found'; readonly client?: AttributeSet; readonly shared?: AttributeSet }
  | { readonly status: 'not-found' }
  /** ThingsBoard did not answer in time (it sends nothing when it fails). */
  | { readonly status: 'timeout' }
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number };

/**
 * A device reads its attributes. With keys: one `v1/gateway/attributes/request` per scope, answers merged
 * (and remembered); while upstream is down, keys the cache holds are still answered. Without keys: every
 * attribute, from one request (readAll).
 */
export async function readAttributes(context: BridgeContext, device: Device, keys: AttributeKeys): Promise<AttributeReadOutcome> {
  const { attributes } = context;
  const all = keys.client.length === 0 && keys.shared.length === 0;
  if (!context.upstream.connected && !all) {
    const client = pick(attributes.client(device.name), keys.client);
    const shared = pick(attributes.shared(device.name), keys.shared);
    if (client && shared) return outcome(client, shared);
  }
  const offline = all ? 'every attribute' : 'these attributes, which the gateway has not cached';
  return askUpstream(context, device, offline, async () => {
    if (all) return readAll(context, device);
    const [client, shared] = await Promise.all([
      requestScope(context, device, 'client', keys.client),
      requestScope(context, device, 'shared', keys.shared),
    ]);
    return client === undefined || shared === undefined ? { status: 'timeout' } : outcome(client, shared);
  });
}

/** Runs `ask` with the device announced; unavailable (with when to retry) while upstream is down or refuses the publish. */
async function askUpstream(context: BridgeContext, device: Device, wanted: string, ask: () => Promise<AttributeReadOutcome>): Promise<AttributeReadOutcome> {
  const { upstream } = context;
  if (!upstream.connected) {
    return {
      status: 'unavailable',
      reason: `the gateway is not connected to ThingsBoard, which it needs for ${wanted}`,
      retryAfterSeconds: upstream.retryAfterSeconds(),
    };
  }
  context.presence.ensureAnnounced(device);
  try {
    return await ask();
  } catch (error) {
    if (error instanceof UpstreamUnavailableError) {
      return { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds };
    }
    throw error;
  }
}

/**
 * Every client and shared attribute, as ThingsBoard answers a key-less GET. The Gateway API's `keys: []`
 * answers them mixed, scope lost, and cannot ask for one scope whole (docs/thingsboard.md#attribute-requests).
 * Keys the gateway knows as shared (its cache, filled by pushes and answers) go under shared; the scope of
 * any other key is asked with one shared-scope request for those keys, so a shared attribute the gateway
 * never saw is still reported as shared. Fresher values of shared keys update the cache; nothing is removed
 * from it, since a key the answer lacks may have come as ThingsBoard's bare `value`, which names no key.
 */
async function readAll(context: BridgeContext, device: Device): Promise<AttributeReadOutcome> {
  const found = await ask(context, device, false, 'all');
  if (found === undefined) return { status: 'timeout' };
  const values = found.form === 'values' ? found.values : {};
  const known = context.attributes.shared(device.name);
  const unknown = Object.keys(values).filter((key) => !Object.hasOwn(known, key));
  // Answered and merged into the cache by requestScope: afterwards the cache knows every shared key here.
  const sharedOfUnknown = await requestScope(context, device, 'shared', unknown);
  if (sharedOfUnknown === undefined) return { status: 'timeout' };
  const client = keyedRecord<JsonValue>();
  const shared = keyedRecord<JsonValue>();
  for (const [key, value] of Object.entries(values)) {
    (Object.hasOwn(known, key) || Object.hasOwn(sharedOfUnknown, key) ? shared : client)[key] = value;
  }
  context.attributes.mergeAnswer(device.name, 'shared', Object.keys(shared), shared);
  return outcome(client, shared);
}

/** One scope's request; resolves to what was found ({} if nothing), or undefined on timeout. */
export async function requestScope(
  context: BridgeContext,
  device: Device,
  scope: 'client' | 'shared',
  keys: readonly string[],
): Promise<AttributeSet | undefined> {
  if (keys.length === 0) return {};
  const found = await ask(context, device, scope === 'client', keys);
  if (found === undefined) return undefined;
  const values = answerValues(found, keys);
  context.attributes.mergeAnswer(device.name, scope, keys, values);
  return values;
}

/** One `v1/gateway/attributes/request` and its answer, or undefined when none came in time. */
async function ask(context: BridgeContext, device: Device, client: boolean, keys: readonly string[] | 'all'): Promise<AttributeAnswer | undefined> {
  const { id, answer } = context.attributeReads.open();
  try {
    await context.upstream.publish(Topic.attributeRequest, attributeRequestMessage(id, device.name, client, keys));
  } catch (error) {
    context.attributeReads.cancel(id);
    throw error;
  }
  const found = await answer;
  if (found === undefined) context.log.debug({ device: device.name, client, id }, 'attribute request not answered in time');
  return found;
}

/** ThingsBoard answers one key with a bare `value` and several with `values`; unknown keys are left out. */
function answerValues(found: AttributeAnswer, keys: readonly string[]): Record<string, JsonValue> {
  if (found.form === 'value') return keys.length === 1 ? { [keys[0]!]: found.value } : {};
  if (found.form === 'none') return {};
  const values = keyedRecord<JsonValue>();
  for (const key of keys) if (Object.hasOwn(found.values, key)) values[key] = found.values[key]!;
  return values;
}

/** The cached values of `keys`, or undefined if any is missing. */
function pick(cache: AttributeSet, keys: readonly string[]): AttributeSet | undefined {
  const values = keyedRecord<JsonValue>();
  for (const key of keys) {
    if (!Object.hasOwn(cache, key)) return undefined;
    values[key] = cache[key]!;
  }
  return values;
}

function outcome(client: AttributeSet, shared: AttributeSet): AttributeReadOutcome {
  const hasClient = Object.keys(client).length > 0;
  const hasShared = Object.keys(shared).length > 0;
  if (!hasClient && !hasShared) return { status: 'not-found' };
  return { status: 'found', ...(hasClient ? { client } : {}), ...(hasShared ? { shared } : {}) };
}
