// thethings.io's device API (docs/device-api-thethings.md), /v2/things/{thingToken}[/resources/{key} | /rpc/{id}] over CoAP, for
// devices written for it: the same operations as ThingsBoard's paths. A thing token names a registry device
// through thethings.things, or is a registry access token itself (provisioned devices use their issued
// token as their thing token).
import type { Logger } from 'pino';
import type { Bridge, WrittenValue } from '../../bridge/index.js';
import type { Provisioner } from '../../bridge/provision.js';
import type { ThethingsConfig } from '../../config/load.js';
import type { DeviceRegistry } from '../../devices/registry.js';
import type { TokenCheck } from '../../devices/token-check.js';
import type { AttributeSet, AttributeUpdate, Device, JsonValue, RpcCall } from '../../model.js';
import { parseActivation, parseResourceQuery, parseThingWrite } from '../../payload/thethings-json.js';
import type { Dialect, Gate, Handled } from '../dialect.js';
import { Operation } from '../operations.js';
import { mapAnswer, refuse, type Answer, type Outcome } from '../outcome.js';
import { provisioningTrouble } from '../provision.js';
import { updateStream } from '../reads.js';
import type { DeviceRequest } from '../request.js';
import type { Uplinks } from '../uplinks.js';

export interface ThethingsDeps {
  readonly registry: Pick<DeviceRegistry, 'findByName' | 'findByCredential'>;
  readonly bridge: Bridge;
  readonly provisioner: Provisioner;
  readonly gate: Gate;
  readonly tokens: TokenCheck;
  readonly uplinks: Uplinks;
  readonly config: Pick<ThethingsConfig, 'things' | 'provisionKey' | 'provisionSecret'>;
  readonly log: Logger;
}

/** thethings.io's documented answer to a write (also given to an RPC reply, the same kind of upload). */
const WRITTEN: JsonValue = { status: 'Success', message: 'Created' };

/** thethings.io devices parse every error as JSON: {"status":"error","message":".."}, whatever the code. */
function asThingsError(outcome: Outcome): Outcome {
  if (outcome.kind !== 'refused' || outcome.refusal.body !== undefined) return outcome;
  return { kind: 'refused', refusal: { ...outcome.refusal, body: { status: 'error', message: outcome.refusal.reason } } };
}

/** What a path asks for, for the request metrics. */
export function thethingsOperation(request: Pick<DeviceRequest, 'method'>, segments: readonly string[]): number {
  if (segments.length === 2) return Operation.provision;
  if (segments.length === 3) return request.method === 'POST' ? Operation.telemetry : Operation.attributes_observe;
  if (segments[3] === 'resources') return Operation.values_read;
  if (segments[3] === 'rpc') return Operation.rpc_reply;
  return Operation.unknown;
}

export function thethings(deps: ThethingsDeps): Dialect {
  const { registry, bridge, provisioner, gate, tokens, uplinks, config, log } = deps;
  const deviceOfThing = new Map(config.things.map((thing) => [thing.thingToken, thing.device]));
  const thingOfActivation = new Map(config.things.filter((thing) => thing.activationCode).map((thing) => [thing.activationCode!, thing.thingToken]));

  return {
    hint: "thethings.io's under /v2/things",
    claim: (segments) => (segments[0] === 'v2' && segments[1] === 'things' ? segments : undefined),
    operationOf: thethingsOperation,
    handle(request, segments): Handled {
      const operation = thethingsOperation(request, segments);
      // Every answer under /v2/things passes here, so every error it gives is thethings.io's JSON.
      const done = (outcome: Answer, device?: Device): Handled => ({
        operation,
        device,
        outcome: mapAnswer(outcome, asThingsError),
      });
      const [, , thingToken, feature, id] = segments;
      if (thingToken === undefined) {
        if (request.method !== 'POST') return done(refuse('method-not-allowed', 'activation is POST /v2/things with {"activationCode": "..."}', { allowed: ['POST'] }));
        return done(gate.blocked(request) ?? activate(request));
      }
      const shape =
        segments.length === 3 ? 'thing' : segments.length === 5 && feature === 'resources' ? 'resource' : segments.length === 5 && feature === 'rpc' ? 'rpc-reply' : undefined;
      if (!shape) return done(refuse('not-found', 'no such path: expected /v2/things/{thingToken}[/resources/{key} | /rpc/{id}]'));
      const wanted = shape === 'thing' ? ['GET', 'POST'] : shape === 'resource' ? ['GET'] : ['POST'];
      if (!wanted.includes(request.method)) return done(refuse('method-not-allowed', `this path takes ${wanted.join(' or ')}`, { allowed: wanted }));

      const blocked = gate.blocked(request);
      if (blocked) return done(blocked);
      const device = thingDevice(request, thingToken);
      if (!device) return done(refuse('unauthorized', 'unknown thing token'));
      // Over DTLS the session already names a device: the thing token must be that device's.
      const { credential } = request.peer;
      if (credential && registry.findByCredential(credential)?.name !== device.name) {
        return done(refuse('unauthorized', 'the thing token belongs to another device than this DTLS identity'));
      }
      const refused = gate.admitDevice(request, device);
      if (refused) return done(refused, device);
      switch (shape) {
        case 'thing':
          if (request.method === 'POST') return done(uplinks.forward(request, device, 'telemetry', () => parseThingWrite(request.body, request.receivedAt), bridge.telemetry, WRITTEN), device);
          return done(subscribe(request, device), device);
        case 'resource':
          return done(read(request, device, id!), device);
        case 'rpc-reply':
          return done(uplinks.replyToRpc(request, device, id!, WRITTEN), device);
      }
    },
  };

  /** thethings.things first; otherwise a registry access token serves as the thing token. */
  function thingDevice(request: DeviceRequest, thingToken: string): Device | undefined {
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
  function activate(request: DeviceRequest): Answer {
    if (request.unsupportedFormat !== undefined) return refuse('unsupported-format', request.unsupportedFormat);
    const parsed = parseActivation(request.body);
    if (!parsed.ok) return refuse('bad-request', parsed.error);
    const code = parsed.value;
    const configured = thingOfActivation.get(code);
    if (configured !== undefined) return { kind: 'content', created: true, body: { status: 'created', thingToken: configured } };
    if (config.provisionKey === '') {
      tokens.refused(code, request.peer.address, request.receivedAt, !request.peer.credential, 'activation code');
      return refuse('unauthorized', 'unknown activation code');
    }
    const body = { deviceName: code, provisionDeviceKey: config.provisionKey, provisionDeviceSecret: config.provisionSecret };
    const asked = { ...body, credentialsType: 'ACCESS_TOKEN' as const, token: undefined, body };
    return provisioner.provision(asked, request.peer.address).then((outcome): Outcome => {
      switch (outcome.status) {
        case 'answered':
        case 'disabled': {
          const { answer } = outcome;
          if (answer.status === 'SUCCESS' && typeof answer.credentialsValue === 'string') {
            log.info({ device: code }, 'thing activated by provisioning');
            return { kind: 'content', created: true, body: { status: 'created', thingToken: answer.credentialsValue } };
          }
          const reason = answer.status === 'SUCCESS' ? `credentials of type ${answer.credentialsType}, not an access token` : answer.errorMsg;
          return refuse(outcome.status === 'disabled' ? 'forbidden' : 'bad-request', `activation refused: ${reason}`);
        }
        default:
          return provisioningTrouble(outcome);
      }
    });
  }

  /** GET /v2/things/{thingToken}/resources/{key}?limit&startDate&endDate: newest first, from the gateway's recent values. */
  function read(request: DeviceRequest, device: Device, key: string): Outcome {
    const query = parseResourceQuery(request.query);
    if (!query.ok) return refuse('bad-request', query.error);
    const { limit, startDate, endDate } = query.value;
    const values = bridge.recentValues(device, key, { limit, from: startDate, to: endDate });
    return { kind: 'content', body: values.map(({ ts, value }) => ({ key, value, datetime: thingDatetime(ts) })) };
  }

  /**
   * GET /v2/things/{thingToken}: with Observe 0 a subscription to the thing's own writes, its shared-attribute
   * pushes and server-side RPCs, as thethings.io-shaped arrays; first (and without Observe, only) the
   * shared attributes the gateway knows.
   */
  function subscribe(request: DeviceRequest, device: Device): Outcome {
    const current = (): JsonValue => attributeArray(bridge.sharedAttributes(device));
    if (request.updates === 'open') return updateStream(bridge, device, current, { attributes: updateArray, rpc: rpcArray, writes: writeArray });
    return { kind: 'content', body: current() };
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

/** A record's time as thethings.io shows it in reads and notifications: 2015-01-30T15:35:33.000Z. */
function thingDatetime(ts: number): string {
  return new Date(ts).toISOString();
}

/** A write told back: [{"key","value","datetime"}]. */
function writeArray(values: readonly WrittenValue[]): JsonValue {
  return values.map(({ key, value, ts }) => ({ key, value, datetime: thingDatetime(ts) }));
}

function rpcArray(call: RpcCall): JsonValue {
  return [{ key: 'rpc', value: { id: call.id, method: call.method, params: call.params } }];
}
