// POST /api/v1/provision: a device without credentials asks for them. Refused guesses of the provision
// key count against the address like unknown tokens, so a key cannot be brute-forced faster than a token.
import type { ProvisionOutcome, Provisioner } from '../bridge/provision.js';
import type { JsonValue } from '../model.js';
import { parseProvisionRequest, provisionFailure } from '../payload/provision.js';
import type { RequestLimits } from './limits.js';
import { refuse, retryLater, type Answer, type Outcome } from './outcome.js';
import type { DeviceRequest } from './request.js';

export function provision(
  provisioner: Provisioner,
  limits: Pick<RequestLimits, 'unknownToken'>,
  request: DeviceRequest,
): Answer {
  if (request.unsupportedFormat !== undefined) return refuse('unsupported-format', request.unsupportedFormat);
  const parsed = parseProvisionRequest(request.body);
  if (!parsed.ok) return { kind: 'provisioned', result: 'invalid', body: provisionFailure('FAILURE', parsed.error).body as JsonValue };
  return provisioner.provision(parsed.value, request.peer.address).then((outcome): Outcome => {
    switch (outcome.status) {
      case 'answered': {
        const { answer } = outcome;
        if (answer.status === 'SUCCESS') return { kind: 'provisioned', result: 'success', body: answer.body as JsonValue };
        if (answer.status === 'NOT_FOUND' && !request.peer.credential) {
          limits.unknownToken(request.peer.address, parsed.value.provisionDeviceKey, request.receivedAt);
        }
        return { kind: 'provisioned', result: 'refused', body: answer.body as JsonValue };
      }
      case 'disabled':
        return { kind: 'provisioned', result: 'disabled', body: outcome.answer.body as JsonValue };
      default:
        return provisioningTrouble(outcome);
    }
  });
}

/** The provisioner's outcomes other than an answer, as every dialect gives them. */
export function provisioningTrouble(outcome: Extract<ProvisionOutcome, { status: 'timeout' | 'unavailable' | 'bad-answer' }>): Outcome {
  switch (outcome.status) {
    case 'timeout':
      return refuse('timeout', 'ThingsBoard did not answer the provisioning request in time');
    case 'unavailable':
      return retryLater('unavailable', outcome);
    case 'bad-answer':
      return refuse('bad-gateway', outcome.reason);
  }
}
