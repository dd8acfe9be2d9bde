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
 * (and remembered). Without keys: what the gateway knows, since ThingsBoard cannot list a scope. While
 * upstream is down, keys the cache holds are still answered.
 */
export async function readAttributes(context: BridgeContext, device: Device, keys: AttributeKeys): Promise<AttributeReadOutcome> {
  const { attributes, upstream } = context;
  if (keys.client.length === 0 && keys.shared.length === 0) {
    return outcome(attributes.client(device.name), attributes.shared(device.name));
  }
  if (!upstream.connected) {
    const client = pick(attributes.client(device.name), keys.client);
    const shared = pick(attributes.shared(device.name), keys.shared);
    if (client && shared) return outcome(client, shared);
    return {
      status: 'unavailable',
      reason: 'the gateway is not connected to ThingsBoard and has not cached these attributes',
      retryAfterSeconds: upstream.retryAfterSeconds(),
    };
  }
  context.presence.ensureAnnounced(device);
  try {
    const [client, shared] = await Promise.all([
      requestScope(context, device, 'client', keys.client),
      requestScope(context, device, 'shared', keys.shared),
    ]);
    if (client === undefined || shared === undefined) return { status: 'timeout' };
    return outcome(client, shared);
  } catch (error) {
    if (error instanceof UpstreamUnavailableError) {
      return { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds };
    }
    throw error;
  }
}

/** One scope's request; resolves to what was found ({} if nothing), or undefined on timeout. */
export async function requestScope(
  context: BridgeContext,
  device: Device,
  scope: 'client' | 'shared',
  keys: readonly string[],
): Promise<AttributeSet | undefined> {
  if (keys.length === 0) return {};
  const { id, answer } = context.attributeReads.open();
  try {
    await context.upstream.publish(Topic.attributeRequest, attributeRequestMessage(id, device.name, scope === 'client', keys));
  } catch (error) {
    context.attributeReads.cancel(id);
    throw error;
  }
  const found = await answer;
  if (found === undefined) {
    context.log.debug({ device: device.name, scope, id }, 'attribute request not answered in time');
    return undefined;
  }
  const values = answerValues(found, keys);
  context.attributes.mergeAnswer(device.name, scope, keys, values);
  return values;
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
