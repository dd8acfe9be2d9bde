// ThingsBoard's MQTT device API (docs/device-api-mqtt.md): the topic table of its MQTT transport over the
// operations every dialect shares. A topic's levels are the request's segments; a PUBLISH is a POST, a
// SUBSCRIBE opens a stream of updates (a GET with updates "open"). Answers go to the topic ThingsBoard
// answers on (answerTopic); streamed items carry their own topic ({topic, payload}), because an RPC's id
// is part of its topic. The connection is authenticated once, at CONNECT (connect()).
import type { DeviceRegistry } from '../../devices/registry.js';
import type { AttributeUpdate, Device, JsonValue, PeerCredential, RpcCall } from '../../model.js';
import { parseAttributes, parseClaim, parseJson, parseTelemetry } from '../../payload/thingsboard-json.js';
import type { Dialect, Handled } from '../dialect.js';
import { Operation } from '../operations.js';
import { mapAnswer, refuse, type Answer, type Outcome, type Problem } from '../outcome.js';
import { provision } from '../provision.js';
import { readAttributes, readPackage, updatePayload, updateStream } from '../reads.js';
import type { DeviceRequest } from '../request.js';
import type { ThingsBoardDeps } from './thingsboard.js';

/** What ThingsBoard's other dialects need, and the registry that checks client certificates at CONNECT. */
export interface ThingsBoardMqttDeps extends ThingsBoardDeps {
  readonly registry: Pick<DeviceRegistry, 'refuseCertificate'>;
  /** How long a firmware chunk request may wait for its image being downloaded. */
  readonly packageWaitMs: number;
}

/** A client certificate presented over TLS, as Node reports it (fingerprint normalised to lower-case hex). */
export interface PresentedClientCertificate {
  readonly fingerprint256: string;
  readonly commonName: string | null;
  readonly subject: string;
  /** Why it does not chain to the configured CA, or null when it does. */
  readonly chainError: string | null;
}

export interface MqttConnect {
  readonly username: string | undefined;
  readonly clientId: string;
  readonly certificate: PresentedClientCertificate | undefined;
  readonly address: string;
  readonly receivedAt: number;
}

/** Who a connection speaks for, or why it may not connect (the CONNACK's return code). */
export type MqttGrant =
  | { readonly kind: 'device'; readonly device: Device }
  /** ThingsBoard's provisioning session: username "provision", one topic in and one out. */
  | { readonly kind: 'provisioning' }
  | { readonly kind: 'refused'; readonly code: 'bad-credentials' | 'not-authorized'; readonly reason: string };

export interface MqttDialect extends Dialect {
  connect(request: MqttConnect): MqttGrant;
  /** The topic an answer to a PUBLISH on `topic` goes to, or undefined when ThingsBoard answers none. */
  answerTopic(topic: string): string | undefined;
  /**
   * Where a refused question on `topic` is told, as ThingsBoard's status word, before the connection is
   * closed (a firmware chunk: v2/fw/error); undefined: a refused question is simply not answered.
   */
  errorTopic(topic: string): string | undefined;
}

/** The username of ThingsBoard's provisioning sessions. */
export const PROVISION_USERNAME = 'provision';

export const TOPICS = {
  telemetry: 'v1/devices/me/telemetry',
  attributes: 'v1/devices/me/attributes',
  attributeRequestPrefix: 'v1/devices/me/attributes/request/',
  attributeResponses: 'v1/devices/me/attributes/response/+',
  rpcRequests: 'v1/devices/me/rpc/request/+',
  rpcResponses: 'v1/devices/me/rpc/response/+',
  claim: 'v1/devices/me/claim',
  provisionRequest: '/provision/request',
  provisionResponse: '/provision/response',
  /** Where ThingsBoard tells a firmware or software chunk request's failure (NOT_FOUND, FAILURE), before it closes the connection. */
  packageErrors: 'v2/fw/error',
} as const;

/** Subscriptions that only say the device wants the answers it asks for: granted, with no stream of their own. */
const ANSWER_FILTERS = new Set<string>([
  TOPICS.attributeResponses,
  TOPICS.rpcResponses,
  'v2/fw/response/+/chunk/+',
  'v2/sw/response/+/chunk/+',
  TOPICS.packageErrors,
  'v2/sw/error',
]);

/**
 * What a topic filter a device subscribes to is, in ThingsBoard's MQTT transport: filters are matched as
 * exact strings there, so v1/devices/me/# is refused as ThingsBoard refuses it.
 */
export function subscriptionKind(filter: string): 'attributes' | 'rpc' | 'answers' | undefined {
  if (filter === TOPICS.attributes) return 'attributes';
  if (filter === TOPICS.rpcRequests) return 'rpc';
  return ANSWER_FILTERS.has(filter) ? 'answers' : undefined;
}

/** ThingsBoard's shapes for pushed items: a shared-attribute update as it is, an RPC as {method, params} under its id. */
const attributeMessage = (update: AttributeUpdate): JsonValue => ({ topic: TOPICS.attributes, payload: updatePayload(update) });
const rpcMessage = (call: RpcCall): JsonValue => ({ topic: `v1/devices/me/rpc/request/${call.id}`, payload: { method: call.method, params: call.params } });

/** The operation a topic's PUBLISH (POST) or SUBSCRIBE (GET) is, for the request metrics. */
function operationOf(request: Pick<DeviceRequest, 'method'>, segments: readonly string[]): number {
  const topic = segments.join('/');
  if (request.method === 'GET') {
    const kind = subscriptionKind(topic);
    return kind === 'attributes' ? Operation.attributes_observe : kind === 'rpc' ? Operation.rpc_observe : Operation.unknown;
  }
  if (topic === TOPICS.telemetry) return Operation.telemetry;
  if (topic === TOPICS.attributes) return Operation.attributes;
  if (topic === TOPICS.claim) return Operation.claim;
  if (topic === TOPICS.provisionRequest) return Operation.provision;
  if (segments[0] === 'v2') return Operation.firmware;
  if (topic.startsWith(TOPICS.attributeRequestPrefix)) return Operation.attributes_read;
  if (topic.startsWith('v1/devices/me/rpc/request/')) return Operation.client_rpc;
  if (topic.startsWith('v1/devices/me/rpc/response/')) return Operation.rpc_reply;
  return Operation.unknown;
}

const PACKAGE_TOPIC = /^v2\/(fw|sw)\/request\/([^/]{1,64})\/chunk\/(\d{1,9})$/;

export function thingsBoardMqtt(deps: ThingsBoardMqttDeps): MqttDialect {
  const { bridge, gate, identify, uplinks } = deps;

  function connect(request: MqttConnect): MqttGrant {
    const credential = certificateCredential(request.certificate, deps.registry);
    if (typeof credential === 'string') return { kind: 'refused', code: 'not-authorized', reason: `the client certificate ${credential}` };
    const asRequest = connectRequest(request, credential);
    // ThingsBoard opens a provisioning session for the username or the client id "provision".
    if (!credential && (request.username === PROVISION_USERNAME || request.clientId === PROVISION_USERNAME)) return { kind: 'provisioning' };
    if (!credential && (request.username === undefined || request.username === '')) {
      return { kind: 'refused', code: 'not-authorized', reason: 'no access token: the MQTT username must be the device\'s access token' };
    }
    const blocked = gate.blocked(asRequest);
    if (blocked) return { kind: 'refused', code: 'not-authorized', reason: 'this address is blocked for a while after trying unknown access tokens' };
    // A certificate names the device: the username is not read (ThingsBoard's X.509 devices send none, or
    // an empty one, or anything).
    const token = credential ? undefined : request.username;
    const device = identify(asRequest, token);
    // ThingsBoard's "bad user name or password" (3.1.1: 5 as well; MQTT 5: 0x86).
    if (typeof device === 'string') return { kind: 'refused', code: 'bad-credentials', reason: device };
    return { kind: 'device', device };
  }

  function publish(request: DeviceRequest, topic: string, device: Device): Answer {
    switch (topic) {
      case TOPICS.telemetry:
        return uplinks.forward(request, device, 'telemetry', () => parseTelemetry(request.body, request.receivedAt), bridge.telemetry);
      case TOPICS.attributes:
        return uplinks.forward(request, device, 'attributes', () => parseAttributes(request.body), bridge.clientAttributes);
      case TOPICS.claim:
        return uplinks.forward(request, device, 'claim', () => parseClaim(request.body), bridge.claim);
    }
    const [v1, devices, me, feature, direction, id, extra] = request.segments;
    const ownTopic = v1 === 'v1' && devices === 'devices' && me === 'me';
    if (ownTopic && extra === undefined && id !== undefined && id !== '' && direction !== undefined) {
      if (feature === 'attributes' && direction === 'request') return attributeRequest(request, id, device);
      if (feature === 'rpc' && direction === 'request') {
        // ThingsBoard tells a device whose client-side RPC found no reply in time {"error":"timeout"}.
        return mapAnswer(uplinks.clientRpc(request, device), (outcome) => (isRefused(outcome, 'timeout') ? { kind: 'content', body: { error: 'timeout' } } : outcome));
      }
      if (feature === 'rpc' && direction === 'response') return uplinks.replyToRpc(request, device, id);
    }
    const chunk = PACKAGE_TOPIC.exec(topic);
    if (chunk) {
      // The payload is the chunk size in bytes; empty or 0: the whole package. ThingsBoard serves the
      // package assigned now: the topic names no title or version.
      const size = request.body.toString('latin1').trim();
      if (!/^\d{0,9}$/.test(size)) return refuse('bad-request', `a firmware chunk request's payload is the chunk size in bytes (got ${JSON.stringify(size.slice(0, 16))})`);
      return readPackage(bridge, { ...request, query: [`size=${size}`, `chunk=${chunk[3]}`] }, device, chunk[1] === 'fw' ? 'fw' : 'sw', deps.packageWaitMs, 'assigned');
    }
    return refuse('not-found', `no such topic in ThingsBoard's MQTT device API: ${shortTopic(topic)}`);
  }

  /**
   * v1/devices/me/attributes/request/{id} with {"clientKeys": "a,b", "sharedKeys": "c"}; {} asks for every
   * attribute. ThingsBoard answers {} when none is found, and refuses an empty payload or a non-numeric id.
   */
  function attributeRequest(request: DeviceRequest, id: string, device: Device): Answer {
    if (!/^\d{1,10}$/.test(id)) return refuse('bad-request', `an attribute request id must be a number (got ${JSON.stringify(shortTopic(id))})`);
    const query = attributeQuery(request.body);
    if (typeof query === 'string') return refuse('bad-request', query);
    return mapAnswer(readAttributes(bridge, { ...request, query }, device), (outcome) => (isRefused(outcome, 'not-found') ? { kind: 'content', body: {} } : outcome));
  }

  function subscribe(topic: string, device: Device): Answer {
    switch (subscriptionKind(topic)) {
      case 'attributes':
        // ThingsBoard sends only changes on this topic; the current state is an attribute request away.
        return updateStream(bridge, device, () => undefined, { attributes: attributeMessage });
      case 'rpc':
        return updateStream(bridge, device, () => undefined, { rpc: rpcMessage });
      case 'answers':
        return { kind: 'empty' };
      default:
        return refuse('not-found', `no such topic filter in ThingsBoard's MQTT device API: ${shortTopic(topic)}`);
    }
  }

  return {
    hint: 'device topics are v1/devices/me/... and v2/fw|sw/request/...; provisioning is /provision/request',
    claim: (segments) => segments,
    operationOf,
    connect,
    errorTopic: (topic) => (PACKAGE_TOPIC.test(topic) ? TOPICS.packageErrors : undefined),
    answerTopic(topic) {
      if (topic === TOPICS.provisionRequest) return TOPICS.provisionResponse;
      if (PACKAGE_TOPIC.test(topic)) return topic.replace('/request/', '/response/');
      if (topic.startsWith(TOPICS.attributeRequestPrefix) || topic.startsWith('v1/devices/me/rpc/request/')) return topic.replace('/request/', '/response/');
      return undefined;
    },
    handle(request, segments): Handled {
      const operation = operationOf(request, segments);
      const topic = segments.join('/');
      const device = request.peer.device;
      const done = (outcome: Answer): Handled => ({ operation, device, outcome });
      if (!device) {
        // A provisioning session: its one topic each way.
        // An address blocked for guessing tokens or provision keys guesses no more here than over CoAP.
        if (request.method === 'POST' && topic === TOPICS.provisionRequest) return done(gate.blocked(request) ?? provision(deps.provisioner, deps.limits, request));
        if (request.method === 'GET' && topic === TOPICS.provisionResponse) return done({ kind: 'empty' });
        return done(refuse('forbidden', `a provisioning session may only publish ${TOPICS.provisionRequest}`));
      }
      if (request.method === 'GET') return done(subscribe(topic, device));
      return done(gate.admitDevice(request, device) ?? publish(request, topic, device));
    },
  };
}

/** The request a CONNECT is, for the checks every dialect makes (blocked addresses, tokens). */
function connectRequest(request: MqttConnect, credential: PeerCredential | undefined): DeviceRequest {
  return {
    method: 'CONNECT',
    segments: [],
    query: [],
    body: Buffer.alloc(0),
    unsupportedFormat: undefined,
    peer: { address: request.address, ...(credential ? { credential } : {}) },
    receivedAt: request.receivedAt,
    updates: undefined,
    continuation: false,
    restored: false,
  };
}

/** A presented certificate as the credential naming its device, why it names none, or undefined when there is none. */
function certificateCredential(certificate: PresentedClientCertificate | undefined, registry: Pick<DeviceRegistry, 'refuseCertificate'>): PeerCredential | string | undefined {
  if (!certificate) return undefined;
  const reason = registry.refuseCertificate(certificate, 'mqttDevices.ca (or dtls.ca)');
  if (reason !== undefined) return `(sha256 ${certificate.fingerprint256.slice(0, 16)}…) ${reason}`;
  return { kind: 'certificate', fingerprint256: certificate.fingerprint256, commonName: certificate.commonName ?? undefined, subject: certificate.subject };
}

/**
 * An attribute request's body, {"clientKeys": "a,b", "sharedKeys": "c"}, as the query the CoAP path reads
 * (arrays of names are taken too), or why it is not one.
 */
function attributeQuery(body: Buffer): string[] | string {
  const json = parseJson(body);
  if (!json.ok) return json.error;
  if (typeof json.value !== 'object' || json.value === null || Array.isArray(json.value)) return 'an attribute request is a JSON object such as {"clientKeys":"a,b","sharedKeys":"c"}';
  const query: string[] = [];
  for (const name of ['clientKeys', 'sharedKeys'] as const) {
    const keys = (json.value as Record<string, JsonValue>)[name];
    const list = typeof keys === 'string' ? keys : Array.isArray(keys) ? keys.filter((key) => typeof key === 'string').join(',') : undefined;
    if (list !== undefined && list !== '') query.push(`${name}=${list}`);
  }
  return query;
}

const isRefused = (outcome: Outcome, problem: Problem): boolean => outcome.kind === 'refused' && outcome.refusal.problem === problem;

const shortTopic = (topic: string): string => (topic.length <= 64 ? topic : `${topic.slice(0, 63)}…`);
