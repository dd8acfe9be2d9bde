// ThingsBoard's device provisioning (docs/thingsboard.md): not on the gateway's connection but on a
// separate, short one with the user name "provision", one per request, because ThingsBoard answers on the
// connection that asked. Closed as soon as the answer is in (ThingsBoard would close it a minute later).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import type { UpstreamConfig } from '../config/load.js';

export const ProvisionTopic = { request: '/provision/request', response: '/provision/response' } as const;

export type UpstreamProvisionResult =
  | { readonly kind: 'answered'; readonly payload: Buffer }
  | { readonly kind: 'timeout' }
  /** Could not connect, subscribe or publish; the reason is fit for a log line (no credentials). */
  | { readonly kind: 'unreachable'; readonly reason: string };

export interface ProvisionClientOptions {
  /** The resolved broker URL (the embedded broker's when upstream.url is empty). */
  readonly url: string;
  readonly upstream: Pick<UpstreamConfig, 'ca' | 'connectTimeoutMs'>;
  /** From connecting to the answer. */
  readonly timeoutMs: number;
}

/** Publishes one provisioning request and waits for ThingsBoard's answer. Never rejects. */
export function requestProvisioning(options: ProvisionClientOptions, request: string): Promise<UpstreamProvisionResult> {
  return new Promise((resolve) => {
    let client: MqttClient | undefined;
    let settled = false;
    const finish = (result: UpstreamProvisionResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client?.end(true);
      resolve(result);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), options.timeoutMs);
    try {
      client = mqtt.connect(options.url, {
        // No client certificate even when the gateway uses one: ThingsBoard would take it for the gateway.
        username: 'provision',
        clientId: `provision-${randomBytes(6).toString('hex')}`,
        clean: true,
        reconnectPeriod: 0,
        connectTimeout: Math.min(options.upstream.connectTimeoutMs, options.timeoutMs),
        protocolVersion: 4,
        ca: options.upstream.ca ? readFileSync(options.upstream.ca) : undefined,
      });
    } catch (error) {
      finish({ kind: 'unreachable', reason: (error as Error).message });
      return;
    }
    client.on('error', (error: Error & { code?: string | number }) => finish({ kind: 'unreachable', reason: describeError(error) }));
    client.on('close', () => finish({ kind: 'unreachable', reason: 'the broker closed the provisioning connection before answering' }));
    client.on('message', (topic, payload) => {
      if (topic === ProvisionTopic.response) finish({ kind: 'answered', payload: Buffer.from(payload) });
    });
    client.once('connect', () => {
      client!.subscribe(ProvisionTopic.response, { qos: 1 }, (error, granted) => {
        if (error || granted?.[0]?.qos === 128) {
          finish({ kind: 'unreachable', reason: `the broker refused the subscription to ${ProvisionTopic.response}` });
          return;
        }
        client!.publish(ProvisionTopic.request, request, { qos: 1 }, (publishError) => {
          if (publishError) finish({ kind: 'unreachable', reason: `publishing the request failed: ${publishError.message}` });
        });
      });
    });
  });
}

function describeError(error: Error & { code?: string | number }): string {
  if (error.code === 'ECONNREFUSED') return 'connection refused';
  // MQTT CONNACK 5 / "Not authorized": provisioning is not enabled for this broker or device profile.
  if (error.code === 5 || /not authori[sz]ed/i.test(error.message)) return 'the broker refused the user "provision" (is provisioning enabled in ThingsBoard?)';
  return error.message;
}
