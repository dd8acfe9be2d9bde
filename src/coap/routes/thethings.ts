// thethings.io's CoAP API (docs/device-api-thethings.md), for devices written for it: /v2/things/... → the same bridge
// calls as ThingsBoard's paths. A thing token names a registry device through thethings.things, or is a
// registry access token itself (provisioned devices use their issued token as their thing token).
import type { Logger } from 'pino';
import type { Bridge } from '../../bridge/index.js';
import type { Provisioner } from '../../bridge/provision.js';
import type { ThethingsConfig } from '../../config/load.js';
import type { DeviceRegistry } from '../../devices/registry.js';
import type { TokenCheck } from '../../devices/token-check.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall } from '../../model.js';
import { parseActivation, parseResourceQuery, parseThingWrite } from '../../payload/thethings-json.js';
import { parseRpcId, parseRpcReply } from '../../payload/thingsboard-json.js';
import { Method, ResponseCode } from '../codes.js';
import { continuesOrEnds, type RequestLimits } from '../limits.js';
import type { CoapRequest, CoapResponse } from '../request.js';
import { checkContentFormat, error, json, provisioningTrouble, refusedSource, startObservation, uplinkAnswer } from './answers.js';
import { Operation, type Route } from './index.js';

export interface ThethingsRouteDeps {
  readonly registry: Pick<DeviceRegistry, 'findByName' | 'findByCredential'>;
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  readonly limits: Pick<RequestLimits, 'admitDevice' | 'refuseBlockedSource'>;
  readonly tokens: TokenCheck;
  readonly config: Pick<ThethingsConfig, 'things' | 'provisionKey' | 'provisionSecret'>;
  readonly log: Logger;
}

/** thethings.io answers a write with {"status": "created"}. */
const WRITTEN_ANSWER = json(ResponseCode.Created, { status: 'created' });

/** What a path asks for, for the request metrics. */
export function thethingsOperation(request: CoapRequest, segments: readonly string[]): number {
  if (segments.length === 2) return Operation.provision;
  if (segments.length === 3) return request.method === Method.POST ? Operation.telemetry : Operation.attributes_observe;
  if (segments[3] === 'resources') return Operation.values_read;
  if (segments[3] === 'rpc') return Operation.rpc_reply;
  return Operation.unknown;
}

export function createThethingsRoute(deps: ThethingsRouteDeps): Route {
  const { registry, bridge, provisioner, limits, tokens, config, log } = deps;
  const deviceOfThing = new Map(config.things.map((thing) => [thing.thingToken, thing.device]));
  const thingOfActivation = new Map(config.things.filter((thing) => thing.activationCode).map((thing) => [thing.activationCode!, thing.thingToken]));

  const route = function thethingsRoute(request: CoapRequest, segments: readonly string[]): CoapResponse | Promise<CoapResponse> {
    request.operation = thethingsOperation(request, segments);
    const [, , thingToken, feature, id] = segments;
    if (thingToken === undefined) {
      if (request.method !== Method.POST) return error(ResponseCode.MethodNotAllowed, 'activation is POST /v2/things with {"activationCode": "..."}');
      return activate(request);
    }
    const shape =
      segments.length === 3
        ? 'thing'
        : segments.length === 5 && feature === 'resources'
          ? 'resource'
          : segments.length === 5 && feature === 'rpc'
            ? 'rpc-reply'
            : undefined;
    if (!shape) return error(ResponseCode.NotFound, 'no such path: expected /v2/things/{thingToken}[/resources/{key} | /rpc/{id}]');
    const wanted = shape === 'thing' ? [Method.GET, Method.POST] : shape === 'resource' ? [Method.GET] : [Method.POST];
    if (!wanted.includes(request.method)) return error(ResponseCode.MethodNotAllowed, `this path takes ${wanted.map((m) => (m === Method.GET ? 'GET' : 'POST')).join(' or ')}`);

    const blocked = refusedSource(limits, request);
    if (blocked) return blocked;
    const device = thingDevice(request, thingToken);
    if (!device) return error(ResponseCode.Unauthorized, 'unknown thing token');
    // Over DTLS the session already names a device: the thing token must be that device's.
    const { credential } = request.peer;
    if (credential && registry.findByCredential(credential)?.name !== device.name) {
      return error(ResponseCode.Unauthorized, 'the thing token belongs to another device than this DTLS identity');
    }
    request.authenticatedAs = device.name;
    // A registration replayed at start is no new request of the device's: it uses none of its allowance.
    if (!continuesOrEnds(request) && !request.restored) {
      const refused = limits.admitDevice(device.name, request.receivedAt);
      if (refused) return refused;
    }
    switch (shape) {
      case 'thing':
        return request.method === Method.POST ? write(request, device) : subscribe(request, device);
      case 'resource':
        return read(request, device, id!);
      case 'rpc-reply':
        return replyToRpc(request, device, id!);
    }
  };
  return Object.assign(route, { operationOf: thethingsOperation });

  /** thethings.things first; otherwise a registry access token serves as the thing token. */
  function thingDevice(request: CoapRequest, thingToken: string): Device | undefined {
    const name = deviceOfThing.get(thingToken);
    if (name === undefined) return tokens.device(thingToken, request.peer.address, request.receivedAt, !request.peer.credential && !request.restored);
    const device = registry.findByName(name);
    if (!device && tokens.firstTime(`thing ${name}`)) log.warn({ device: name }, 'thethings.things names a device that is not in devices; its thing token is refused (4.01)');
    return device;
  }

  /**
   * POST /v2/things {"activationCode"}: the thing token from thethings.things, or one issued by
   * provisioning (thethings.provisionKey) for a device named after the code: local provisioning gives the
   * same token again, and never a device of the configuration file (the provisioner refuses those names).
   * Unknown codes count against the address like unknown tokens.
   */
  function activate(request: CoapRequest): CoapResponse | Promise<CoapResponse> {
    const blocked = refusedSource(limits, request);
    if (blocked) return blocked;
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parseActivation(request.payload);
    if (!parsed.ok) return error(ResponseCode.BadRequest, parsed.error);
    const code = parsed.value;
    const configured = thingOfActivation.get(code);
    if (configured !== undefined) return json(ResponseCode.Created, { status: 'created', thingToken: configured });
    if (config.provisionKey === '') {
      tokens.refused(code, request.peer.address, request.receivedAt, !request.peer.credential, 'activation code');
      return error(ResponseCode.Unauthorized, 'unknown activation code');
    }
    const body = { deviceName: code, provisionDeviceKey: config.provisionKey, provisionDeviceSecret: config.provisionSecret };
    const asked = { ...body, credentialsType: 'ACCESS_TOKEN' as const, token: undefined, body };
    return provisioner.provision(asked, request.peer.address).then((outcome): CoapResponse => {
      switch (outcome.status) {
        case 'answered':
        case 'disabled': {
          const { answer } = outcome;
          if (answer.status === 'SUCCESS' && typeof answer.credentialsValue === 'string') {
            log.info({ device: code }, 'thing activated by provisioning');
            return json(ResponseCode.Created, { status: 'created', thingToken: answer.credentialsValue });
          }
          const reason = answer.status === 'SUCCESS' ? `credentials of type ${answer.credentialsType}, not an access token` : answer.errorMsg;
          return error(outcome.status === 'disabled' ? ResponseCode.Forbidden : ResponseCode.BadRequest, `activation refused: ${reason}`);
        }
        default:
          return provisioningTrouble(outcome);
      }
    });
  }

  /** POST /v2/things/{thingToken} {"values":[..]}: telemetry. */
  function write(request: CoapRequest, device: Device): CoapResponse | Promise<CoapResponse> {
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parseThingWrite(request.payload, request.receivedAt);
    if (!parsed.ok) return error(ResponseCode.BadRequest, parsed.error);
    return bridge.telemetry(device, parsed.value).then((outcome) => uplinkAnswer(outcome, WRITTEN_ANSWER));
  }

  /** GET /v2/things/{thingToken}/resources/{key}?limit&startDate&endDate: newest first, from the gateway's recent values. */
  function read(request: CoapRequest, device: Device, key: string): CoapResponse {
    const query = parseResourceQuery(request.uriQuery);
    if (!query.ok) return error(ResponseCode.BadRequest, query.error);
    const { limit, startDate, endDate } = query.value;
    const values = bridge.recentValues(device, key, { limit, from: startDate, to: endDate });
    return json(
      ResponseCode.Content,
      values.map(({ ts, value }) => ({ key, value, datetime: new Date(ts).toISOString() })),
    );
  }

  /**
   * GET /v2/things/{thingToken}: with Observe 0 a subscription to the thing's shared-attribute pushes and
   * server-side RPCs, as thethings.io-shaped arrays; first the shared attributes the gateway knows.
   */
  function subscribe(request: CoapRequest, device: Device): CoapResponse {
    const current = (): CoapResponse => json(ResponseCode.Content, attributeArray(bridge.sharedAttributes(device)));
    if (request.observation) {
      startObservation(request.observation, device, current, (notifications) => [
        bridge.observeSharedAttributes(device, notifications.subscriber((update: AttributeUpdate) => json(ResponseCode.Content, updateArray(update)))),
        bridge.observeRpc(device, notifications.subscriber((call: RpcCall) => json(ResponseCode.Content, rpcArray(call)))),
      ]);
    }
    return current();
  }

  /** POST /v2/things/{thingToken}/rpc/{id}: the thing answers server-side RPC `id`. */
  function replyToRpc(request: CoapRequest, device: Device, requestId: string): CoapResponse | Promise<CoapResponse> {
    const id = parseRpcId(requestId);
    if (!id.ok) return error(ResponseCode.BadRequest, id.error);
    const unsupported = checkContentFormat(request);
    if (unsupported) return unsupported;
    const parsed = parseRpcReply(request.payload);
    if (!parsed.ok) return error(ResponseCode.BadRequest, parsed.error);
    return bridge.rpcReply(device, id.value, parsed.value).then((outcome) => uplinkAnswer(outcome, WRITTEN_ANSWER));
  }
}

/** {"k": v} → [{"key": "k", "value": v}]: thethings.io's shape. */
function attributeArray(attributes: AttributeSet): JsonValue {
  return Object.entries(attributes).map(([key, value]) => ({ key, value }));
}

/** A push: changed keys as [{"key","value"}], deleted ones as {"key","deleted": true}. */
function updateArray(update: AttributeUpdate): JsonValue {
  const changed = Object.entries(update.changed).map(([key, value]): JsonValue => ({ key, value }));
  return [...changed, ...update.deleted.map((key): JsonValue => ({ key, deleted: true }))];
}

function rpcArray(call: RpcCall): JsonValue {
  return [{ key: 'rpc', value: { id: call.id, method: call.method, params: call.params } }];
}
