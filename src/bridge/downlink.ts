import { LogOncePer } from '../log.js';
import type { Device } from '../model.js';
import { Topic, parseDownlink, rpcReplyItem, type DownlinkBounds, type DownlinkRefusal } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';
import { prefetchAssignedPackages } from './firmware.js';
import { handleRpcRequest } from './rpc.js';
import { handleSharedAttributePush } from './shared-attributes.js';

/** Messages from upstream refused, by why; read by the metrics endpoint. */
export type DownlinkRefusals = Record<DownlinkRefusal, number>;

/** How often the same kind of refusal is logged again: a rule chain gone wrong repeats itself every second. */
const REFUSAL_LOG_WINDOW_MS = 10 * 60_000;

/**
 * Everything ThingsBoard sends the gateway, checked once against `bounds` and handed to the handler for
 * its kind. What is refused reaches no device, cache or file: it is counted in `refusals`, logged once per
 * topic and reason for ten minutes, and a refused RPC is answered with an error where ThingsBoard can
 * take the answer.
 */
export function createDownlinkHandler(
  context: BridgeContext,
  bounds: DownlinkBounds,
  refusals: DownlinkRefusals,
): (topic: string, payload: Buffer) => void {
  const refusalLog = new LogOncePer(REFUSAL_LOG_WINDOW_MS);
  const known = (topic: string, name: string): Device | undefined => {
    const device = context.devices.findByName(name);
    if (device) return device;
    // Only devices the gateway connected get messages from ThingsBoard; anything else is stale or forged,
    // and keeping it (an RPC queue, a cache entry) would grow without bound. No reply either: ThingsBoard
    // creates a device for any name a gateway reports on.
    refusals.unknown_device++;
    if (refusalLog.first(`${topic} unknown device`)) {
      context.log.warn(
        { topic, device: name.slice(0, 64) },
        'dropped a message from upstream for a device this gateway does not know (not in devices or devicesFile); repeats are not logged for 10 minutes',
      );
    }
    return undefined;
  };

  return (topic, payload) => {
    const message = parseDownlink(topic, payload, bounds);
    switch (message.kind) {
      case 'shared-attributes':
        if (!known(topic, message.device)) return;
        handleSharedAttributePush(context, message.device, message.update);
        prefetchAssignedPackages(context, message.device, message.update);
        return;
      case 'rpc':
        if (!known(topic, message.device)) return;
        handleRpcRequest(context, message.device, message.call);
        return;
      case 'attribute-response':
        if (!context.attributeReads.settle(message.id, message.found)) {
          context.log.debug({ id: message.id, device: message.device }, 'attribute response for no waiting request (timed out?)');
        }
        return;
      case 'own-rpc-response':
        if (!context.ownRpcs.settle(message.requestId, message.body)) {
          context.log.debug({ requestId: message.requestId }, 'RPC response for no waiting request (timed out?)');
        }
        return;
      case 'echo':
        return;
      case 'invalid': {
        refusals[message.refusal]++;
        const device = message.rpc && context.devices.findByName(message.rpc.device);
        // Answers to the gateway's own RPCs come on a topic per request: logged as one topic.
        const subscription = topic.startsWith(Topic.ownRpcResponsePrefix) ? `${Topic.ownRpcResponsePrefix}+` : topic;
        if (refusalLog.first(`${subscription} ${message.refusal}`)) {
          context.log.warn(
            { topic, reason: message.reason, bytes: payload.length, ...(device ? { device: device.name, rpcId: message.rpc!.id } : {}) },
            `refused a message from upstream${device ? ' (the RPC is answered with an error)' : ''}; repeats are not logged for 10 minutes`,
          );
        }
        if (device) answerRefusedRpc(context, device, message.rpc!.id, message.reason);
        return;
      }
    }
  };
}

/** ThingsBoard hears why at once instead of waiting out the RPC's timeout; the reply is an uplink like any other. */
function answerRefusedRpc(context: BridgeContext, device: Device, id: number, reason: string): void {
  const item = rpcReplyItem(device.name, id, { error: `refused by the gateway: ${reason}` }, context.upstream.maxMessageBytes);
  void context.uplink.send(device, [item]).then((outcome) => {
    if (outcome.status !== 'accepted') context.log.debug({ device: device.name, rpcId: id, outcome: outcome.status }, 'the error answer to a refused RPC was not sent');
  });
}
