// Device provisioning (docs/device-api-coap.md): a device with a provision key and secret but no credentials asks
// for some. Forwarded to ThingsBoard on a short connection of its own (provision.mode "upstream"), or
// decided here against configured key/secret pairs ("local"); either way the issued token is registered at
// once, so the device's next request with it works.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { ProvisionConfig, ProvisionKey } from '../config/load.js';
import type { DeviceEnrolment } from '../devices/enrolment.js';
import { fingerprint } from '../log.js';
import type { Device, JsonValue } from '../model.js';
import { writeJson } from '../payload/json-text.js';
import { isPathSafeToken, parseProvisionAnswer, provisionFailure, type ProvisionAnswer, type ProvisionRequest } from '../payload/provision.js';
import type { UpstreamProvisionResult } from '../upstream/provision-client.js';

export type ProvisionOutcome =
  /** The answer to give the device: SUCCESS (2.01), NOT_FOUND or FAILURE (4.00). */
  | { readonly status: 'answered'; readonly answer: ProvisionAnswer }
  /** provision.mode is "off" (4.03). */
  | { readonly status: 'disabled'; readonly answer: ProvisionAnswer }
  /** ThingsBoard did not answer within provision.timeoutMs (5.04). */
  | { readonly status: 'timeout' }
  /** ThingsBoard unreachable, or too many requests at once (5.03 with Max-Age). */
  | { readonly status: 'unavailable'; readonly reason: string; readonly retryAfterSeconds: number }
  /** ThingsBoard answered something that is not a provisioning answer (5.02). */
  | { readonly status: 'bad-answer'; readonly reason: string };

export interface Provisioner {
  /** `peer` names the requester in log lines. */
  provision(request: ProvisionRequest, peer: string): Promise<ProvisionOutcome>;
  /** Requests by outcome, for /metrics. */
  stats(): Readonly<Record<ProvisionResult, number>>;
}

/** The outcome of a request in one word: success, refused (NOT_FOUND, FAILURE), or why there was no answer. */
export type ProvisionResult = 'success' | 'refused' | 'disabled' | 'timeout' | 'unavailable' | 'bad_answer';

export interface ProvisionerDeps {
  readonly config: ProvisionConfig;
  readonly enrolment: DeviceEnrolment;
  /** Sends the request to ThingsBoard and waits for its answer (upstream mode). */
  readonly askUpstream: (request: string) => Promise<UpstreamProvisionResult>;
  /** Tells ThingsBoard about a device provisioned locally (v1/gateway/connect, which creates it). */
  readonly announce: (device: Device) => void;
  readonly log: Logger;
}

const UNREACHABLE_RETRY_SECONDS = 10;
const BUSY_RETRY_SECONDS = 5;
const TOKEN_BYTES = 15;

export function createProvisioner(deps: ProvisionerDeps): Provisioner {
  const { config, enrolment, log } = deps;
  let inProgress = 0;
  const results: Record<ProvisionResult, number> = { success: 0, refused: 0, disabled: 0, timeout: 0, unavailable: 0, bad_answer: 0 };
  const count = (outcome: ProvisionOutcome): ProvisionOutcome => {
    const result: ProvisionResult =
      outcome.status === 'answered' ? (outcome.answer.status === 'SUCCESS' ? 'success' : 'refused') : outcome.status === 'bad-answer' ? 'bad_answer' : outcome.status;
    results[result]++;
    return outcome;
  };

  return {
    stats: () => ({ ...results }),
    provision: async (request, peer) => count(await provision(request, peer)),
  };

  async function provision(request: ProvisionRequest, peer: string): Promise<ProvisionOutcome> {
    if (config.mode === 'off') {
      log.info({ peer }, 'provisioning request refused: provision.mode is "off"');
      return { status: 'disabled', answer: provisionFailure('FAILURE', 'provisioning is not enabled on this gateway') };
    }
    if (inProgress >= config.maxConcurrent) {
      return { status: 'unavailable', reason: 'too many provisioning requests at once', retryAfterSeconds: BUSY_RETRY_SECONDS };
    }
    inProgress++;
    try {
      return config.mode === 'local' ? provisionLocally(request, peer) : await provisionUpstream(request, peer);
    } finally {
      inProgress--;
    }
  }

  /** A device without a name gets one the gateway can log and register (ThingsBoard's own would stay hidden). */
  function nameFor(request: ProvisionRequest, peer: string): string {
    if (request.deviceName !== undefined) return request.deviceName;
    const name = `${config.namePrefix}${randomBytes(4).toString('hex')}`;
    log.info({ peer, device: name }, 'provisioning request without deviceName: the gateway named the device');
    return name;
  }

  async function provisionUpstream(request: ProvisionRequest, peer: string): Promise<ProvisionOutcome> {
    const name = nameFor(request, peer);
    const conflict = enrolment.conflict(name, request.token);
    if (conflict) {
      log.warn({ peer, device: name, reason: conflict }, 'provisioning request refused (4.00)');
      return { status: 'answered', answer: provisionFailure('FAILURE', conflict) };
    }
    const body: Record<string, JsonValue> = { ...request.body, deviceName: name };
    // The device's own fields go on unchanged, large integers to the digit.
    const result = await deps.askUpstream(writeJson(body));
    switch (result.kind) {
      case 'timeout':
        log.warn({ peer, device: name, timeoutMs: config.timeoutMs }, 'ThingsBoard did not answer the provisioning request in time (5.04)');
        return { status: 'timeout' };
      case 'unreachable':
        log.warn({ peer, device: name, reason: result.reason }, 'cannot reach ThingsBoard to provision a device (5.03)');
        return { status: 'unavailable', reason: `cannot reach ThingsBoard for provisioning: ${result.reason}`, retryAfterSeconds: UNREACHABLE_RETRY_SECONDS };
      case 'answered':
        break;
    }
    const answer = parseProvisionAnswer(result.payload);
    if (!answer) {
      log.warn({ peer, device: name, bytes: result.payload.length }, 'ThingsBoard answered the provisioning request with something unreadable (5.02)');
      return { status: 'bad-answer', reason: 'ThingsBoard answered the provisioning request with something that is not a provisioning answer' };
    }
    if (answer.status !== 'SUCCESS') {
      log.info({ peer, device: name, status: answer.status, errorMsg: answer.errorMsg }, 'ThingsBoard refused to provision the device (4.00)');
      return { status: 'answered', answer };
    }
    const token = answer.credentialsType === 'ACCESS_TOKEN' && typeof answer.credentialsValue === 'string' ? answer.credentialsValue : undefined;
    if (token === undefined || !isPathSafeToken(token)) {
      log.warn(
        { peer, device: name, credentialsType: answer.credentialsType },
        'device provisioned by ThingsBoard with credentials a CoAP device cannot use here; not registered (register it with coap2mqtt devices add)',
      );
      return { status: 'answered', answer };
    }
    const late = enrolment.conflict(name, token);
    if (late) {
      log.error({ peer, device: name, reason: late }, 'device provisioned by ThingsBoard but not registered here');
      return { status: 'answered', answer };
    }
    const { persisted } = enrolment.enrol(name, config.deviceType, token, { via: 'upstream', key: request.provisionDeviceKey, at: new Date().toISOString() });
    log.info({ peer, device: name, tokenSha256Prefix: fingerprint(token), persisted }, 'device provisioned by ThingsBoard and registered');
    return { status: 'answered', answer };
  }

  function provisionLocally(request: ProvisionRequest, peer: string): ProvisionOutcome {
    const key = config.keys.find((candidate) => candidate.key === request.provisionDeviceKey);
    if (!key || !sameSecret(key, request.provisionDeviceSecret)) {
      log.warn(
        { peer, provisionKeySha256Prefix: fingerprint(request.provisionDeviceKey), reason: key ? 'wrong secret' : 'unknown provision key' },
        'provisioning request refused (4.00 NOT_FOUND)',
      );
      return { status: 'answered', answer: provisionFailure('NOT_FOUND', 'unknown provision key or wrong secret') };
    }
    if (request.credentialsType !== 'ACCESS_TOKEN') {
      return { status: 'answered', answer: provisionFailure('FAILURE', 'this gateway issues ACCESS_TOKEN credentials only') };
    }
    const name = nameFor(request, peer);
    // The same device asking again (its first answer was lost) gets the same token, not a refusal.
    const before = enrolment.provisioned(name);
    if (before?.record?.key === key.key && before.token !== undefined && (request.token === undefined || request.token === before.token)) {
      log.info({ peer, device: name }, 'device provisioned again with the same key: same token');
      return { status: 'answered', answer: success(before.token) };
    }
    const token = request.token ?? randomBytes(TOKEN_BYTES).toString('base64url');
    const conflict = enrolment.conflict(name, token) ?? (before ? `a device named "${name}" already exists on this gateway` : undefined);
    if (conflict) {
      log.warn({ peer, device: name, reason: conflict }, 'provisioning request refused (4.00)');
      return { status: 'answered', answer: provisionFailure('FAILURE', conflict) };
    }
    const { device, persisted } = enrolment.enrol(name, key.type, token, { via: 'local', key: key.key, at: new Date().toISOString() });
    deps.announce(device);
    log.info({ peer, device: name, type: key.type, tokenSha256Prefix: fingerprint(token), persisted }, 'device provisioned by the gateway and announced upstream');
    return { status: 'answered', answer: success(token) };
  }
}

function sameSecret(key: ProvisionKey, secret: string): boolean {
  const expected = Buffer.from(key.secret, 'utf8');
  const given = Buffer.from(secret, 'utf8');
  return expected.length === given.length && timingSafeEqual(expected, given);
}

function success(token: string): ProvisionAnswer {
  const body = { credentialsType: 'ACCESS_TOKEN', credentialsValue: token, status: 'SUCCESS' };
  return { status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN', credentialsValue: token, body };
}
