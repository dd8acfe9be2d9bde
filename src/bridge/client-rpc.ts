import type { Device, JsonValue } from '../model.js';
import { MessageTooLargeError, Topic, ownRpcRequestMessage } from '../upstream/gateway-api.js';
import { UpstreamUnavailableError } from '../upstream/connection.js';
import type { BridgeContext } from './context.js';

export type ClientRpcOutcome =
  | { readonly status: 'answered'; readonly body: JsonValue }
  | { readonly status: 'timeout' }
  | { readonly status: 'too-large'; readonly reason: string }
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number };

/**
 * A device's client-side RPC. The Gateway API has none for children, so it goes out as the gateway's own
 * (`v1/devices/me/rpc/request/{n}` with `{"method","params":{"device","params"}}`) and a rule-chain branch
 * answers it on `v1/devices/me/rpc/response/{n}` (the contract is in docs/thingsboard.md).
 */
export async function callClientRpc(context: BridgeContext, device: Device, method: string, params: JsonValue): Promise<ClientRpcOutcome> {
  const { upstream } = context;
  if (!upstream.connected) {
    return { status: 'unavailable', reason: 'the gateway is not connected to ThingsBoard', retryAfterSeconds: upstream.retryAfterSeconds() };
  }
  let message: string;
  try {
    message = ownRpcRequestMessage(device.name, method, params, context.upstream.maxMessageBytes);
  } catch (error) {
    if (error instanceof MessageTooLargeError) return { status: 'too-large', reason: `the RPC is too large for ThingsBoard: ${error.message}` };
    throw error;
  }
  context.presence.ensureAnnounced(device);
  const { id, answer } = context.ownRpcs.open();
  try {
    await upstream.publish(`${Topic.ownRpcRequestPrefix}${id}`, message);
  } catch (error) {
    context.ownRpcs.cancel(id);
    if (error instanceof UpstreamUnavailableError) {
      return { status: 'unavailable', reason: error.message, retryAfterSeconds: error.retryAfterSeconds };
    }
    throw error;
  }
  const body = await answer;
  if (body === undefined) {
    context.log.info({ device: device.name, method, requestId: id }, 'client-side RPC not answered in time (is the rule chain branch in place?)');
    return { status: 'timeout' };
  }
  return { status: 'answered', body };
}
