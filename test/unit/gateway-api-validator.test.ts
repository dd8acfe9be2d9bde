// The fuzz and durability tests trust this oracle; here it is shown to catch what ThingsBoard refuses.
import { describe, expect, it } from 'vitest';
import { gatewayApiProblems } from '../helpers/gateway-api-validator.js';

describe('the gateway-API validator used by the end-to-end tests', () => {
  it('accepts what the gateway publishes', () => {
    expect(gatewayApiProblems('v1/gateway/telemetry', '{"A":[{"ts":1,"values":{"t":21.5,"n":42,"tiny":1.0e-7,"nested":{"big":1e300}}}]}')).toEqual([]);
    expect(gatewayApiProblems('v1/gateway/attributes', '{"A":{"v":3.0e-10,"s":"1e-7"}}')).toEqual([]);
  });

  it('refuses numbers ThingsBoard reads as a long and cannot: exponents without ".", beyond 64 bits', () => {
    expect(gatewayApiProblems('v1/gateway/telemetry', '{"A":[{"ts":1,"values":{"v":1e-7}}]}')).toHaveLength(1);
    expect(gatewayApiProblems('v1/gateway/attributes', '{"A":{"v":9223372036854776000}}')).toHaveLength(1);
  });

  it('refuses shapes that close the session', () => {
    expect(gatewayApiProblems('v1/gateway/telemetry', '{"A":{"ts":1}}')).not.toEqual([]);
    expect(gatewayApiProblems('v1/gateway/rpc', '{"device":"A","id":4294967301,"data":1}')).not.toEqual([]);
    expect(gatewayApiProblems('v1/gateway/connect', '{"type":"x"}')).not.toEqual([]);
    expect(gatewayApiProblems('v1/gateway/telemetry', Buffer.from([0x7b, 0xff, 0x7d]))).not.toEqual([]);
  });
});
