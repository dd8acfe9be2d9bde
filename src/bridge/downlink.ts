import { LogOncePer } from '../log.js';
import { parseDownlink } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';
import { prefetchAssignedPackages } from './firmware.js';
import { handleRpcRequest } from './rpc.js';
import { handleSharedAttributePush } from './shared-attributes.js';

/** Everything ThingsBoard sends the gateway, checked once and handed to the handler for its kind. */
export function createDownlinkHandler(context: BridgeContext): (topic: string, payload: Buffer) => void {
  const invalidLog = new LogOncePer(10 * 60_000);
  return (topic, payload) => {
    const message = parseDownlink(topic, payload);
    switch (message.kind) {
      case 'shared-attributes':
        handleSharedAttributePush(context, message.device, message.update);
        prefetchAssignedPackages(context, message.device, message.update);
        return;
      case 'rpc':
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
      case 'invalid':
        if (invalidLog.first(`${topic} ${message.reason}`)) {
          context.log.warn({ topic, reason: message.reason, bytes: payload.length }, 'ignored a message from upstream the gateway cannot use; repeats are not logged for 10 minutes');
        }
        return;
    }
  };
}
