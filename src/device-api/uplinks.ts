// Operations that carry a body up to ThingsBoard: telemetry, client attributes, claims, RPC replies and
// client-side RPCs. Checked once here (format, JSON), then handed to the bridge.
import type { Logger } from 'pino';
import type { Bridge } from '../bridge/index.js';
import type { Device, JsonValue, UplinkOutcome } from '../model.js';
import { parseClientRpc, parseRpcId, parseRpcReply, type Parsed } from '../payload/thingsboard-json.js';
import { refuse, retryLater, uplinkOutcome, type Answer } from './outcome.js';
import type { DeviceRequest } from './request.js';

export interface Uplinks {
  /** A checked body → the bridge → accepted (with `acceptedBody`, when the dialect answers one), or why not. */
  forward<T>(
    request: DeviceRequest,
    device: Device,
    feature: string,
    parse: () => Parsed<T>,
    send: (device: Device, value: T) => Promise<UplinkOutcome>,
    acceptedBody?: JsonValue,
  ): Answer;
  /** The device answers server-side RPC `requestId` (a path segment). */
  replyToRpc(request: DeviceRequest, device: Device, requestId: string, acceptedBody?: JsonValue): Answer;
  /** A client-side RPC, answered with what the rule chain replies. */
  clientRpc(request: DeviceRequest, device: Device): Answer;
}

export function createUplinks(bridge: Bridge, log: Logger): Uplinks {
  const forward: Uplinks['forward'] = (request, device, feature, parse, send, acceptedBody) => {
    if (request.unsupportedFormat !== undefined) return refuse('unsupported-format', request.unsupportedFormat);
    const parsed = parse();
    if (!parsed.ok) {
      log.debug({ device: device.name, feature, reason: parsed.error }, 'payload refused (bad request)');
      return refuse('bad-request', parsed.error);
    }
    return send(device, parsed.value).then((outcome) => {
      if (outcome.status === 'accepted') log.debug({ device: device.name, feature }, 'accepted');
      else log.debug({ device: device.name, feature, reason: outcome.reason }, outcome.status === 'unavailable' ? 'upstream unavailable' : 'too large for upstream');
      return uplinkOutcome(outcome, acceptedBody);
    });
  };

  return {
    forward,
    replyToRpc(request, device, requestId, acceptedBody) {
      const id = parseRpcId(requestId);
      if (!id.ok) return refuse('bad-request', id.error);
      return forward(request, device, 'rpc reply', () => parseRpcReply(request.body), (d, data) => bridge.rpcReply(d, id.value, data), acceptedBody);
    },
    clientRpc(request, device) {
      if (request.unsupportedFormat !== undefined) return refuse('unsupported-format', request.unsupportedFormat);
      const parsed = parseClientRpc(request.body);
      if (!parsed.ok) return refuse('bad-request', parsed.error);
      return bridge.clientRpc(device, parsed.value.method, parsed.value.params).then((outcome) => {
        switch (outcome.status) {
          case 'answered':
            return { kind: 'content', body: outcome.body };
          case 'timeout':
            return refuse('timeout', 'no reply to the RPC from ThingsBoard in time');
          case 'too-large':
            return refuse('too-large', outcome.reason);
          case 'unavailable':
            return retryLater('unavailable', outcome);
        }
      });
    },
  };
}
