import { SESSION_LIMITS_REQUEST, Topic, parseSessionLimits, type SessionLimits } from '../upstream/gateway-api.js';
import type { BridgeContext } from './context.js';

/**
 * Asks ThingsBoard for the session's limits right after each connection (docs/thingsboard.md) and hands
 * them to the upstream connection, which keeps under 80% of them; bulk traffic waits for this. Servers that
 * do not know the request never answer, so the wait ends after `timeoutMs` with no limits beyond the
 * configured ones.
 */
export function createSessionLimitsAsker(context: BridgeContext, timeoutMs: number): () => void {
  let session = 0;
  let toldNoAnswer = false;
  return () => {
    const current = ++session;
    const { id, answer } = context.ownRpcs.open();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
      timer.unref();
    });
    context.upstream.publish(`${Topic.ownRpcRequestPrefix}${id}`, SESSION_LIMITS_REQUEST).catch(() => {
      // Lost with the connection; the next one asks again.
    });
    void Promise.race([answer, timeout]).then((body) => {
      clearTimeout(timer);
      context.ownRpcs.cancel(id);
      // A newer connection asks for itself.
      if (current !== session || !context.upstream.connected) return;
      const limits = body === undefined ? undefined : parseSessionLimits(body);
      if (limits) {
        context.log.info(describe(limits), 'ThingsBoard session limits received; publishing stays under 80% of them');
      } else if (!toldNoAnswer) {
        toldNoAnswer = true;
        context.log.info(
          { waitedMs: timeoutMs, answered: body !== undefined },
          'no usable answer to getSessionLimits (ThingsBoard before 3.9, or not ThingsBoard): publishing within upstream.maxInflight and upstream.maxMessageBytes, without rate limits',
        );
      }
      context.upstream.applySessionLimits(limits);
    });
  };
}

function describe(limits: SessionLimits): Record<string, unknown> {
  const text = (list: SessionLimits['messages']): string | undefined =>
    list.length === 0 ? undefined : list.map(({ capacity, seconds }) => `${capacity}:${seconds}`).join(',');
  return {
    maxPayloadSize: limits.maxPayloadSize,
    maxInflightMessages: limits.maxInflightMessages,
    messages: text(limits.messages),
    telemetryMessages: text(limits.telemetryMessages),
    telemetryDataPoints: text(limits.telemetryDataPoints),
  };
}
