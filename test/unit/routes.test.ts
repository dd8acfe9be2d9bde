import { describe, expect, it } from 'vitest';
import { packageAlias, parseApiPath } from '../../src/device-api/dialects/thingsboard.js';
import { pathSegments } from '../../src/front-ends/coap/router.js';

describe('device API paths', () => {
  it('splits one Uri-Path holding slashes like separate options', () => {
    expect(pathSegments(['api/v1/TOKEN/telemetry'])).toEqual(['api', 'v1', 'TOKEN', 'telemetry']);
    expect(pathSegments(['api', 'v1', 'TOKEN', 'telemetry'])).toEqual(['api', 'v1', 'TOKEN', 'telemetry']);
    expect(pathSegments(['/api/', 'v1//TOKEN', '', 'rpc'])).toEqual(['api', 'v1', 'TOKEN', 'rpc']);
  });

  it('reads token, feature (any case) and request id by position', () => {
    expect(parseApiPath(['api', 'v1', 'TOKEN', 'Telemetry'])).toMatchObject({ token: 'TOKEN', feature: 'telemetry' });
    expect(parseApiPath(['api', 'v1', 'TOKEN', 'rpc', '42'])).toMatchObject({ token: 'TOKEN', feature: 'rpc', requestId: '42' });
    expect(parseApiPath(['api', 'v1', 'TOKEN', 'attributes', 'updates'])).toMatchObject({ feature: 'attributes' });
  });

  it('recognises the token-less form used by DTLS-identified devices', () => {
    expect(parseApiPath(['api', 'v1', 'telemetry'])).toMatchObject({ token: undefined, feature: 'telemetry' });
    expect(parseApiPath(['api', 'v1', 'rpc', '42'])).toMatchObject({ token: undefined, feature: 'rpc', requestId: '42' });
    expect(parseApiPath(['api', 'v1', 'Attributes', 'updates'])).toMatchObject({ token: undefined, feature: 'attributes' });
    // A token that happens to spell a feature is still a token when a feature follows it.
    expect(parseApiPath(['api', 'v1', 'claim', 'telemetry'])).toMatchObject({ token: 'claim', feature: 'telemetry' });
  });

  it('leaves the feature unset when it is missing or unknown', () => {
    expect(parseApiPath(['api', 'v1', 'TOKEN'])).toMatchObject({ token: 'TOKEN', feature: undefined, featureSegment: undefined });
    expect(parseApiPath(['api', 'v1', 'TOKEN', 'nope'])).toMatchObject({ feature: undefined, featureSegment: 'nope' });
  });
});

describe('package paths', () => {
  it('reads /fw/{token} and /sw/{token} as the device API\'s firmware and software features', () => {
    expect(packageAlias(['fw', 'TOKEN'])).toEqual(['api', 'v1', 'TOKEN', 'firmware']);
    expect(packageAlias(['sw', 'TOKEN'])).toEqual(['api', 'v1', 'TOKEN', 'software']);
    expect(parseApiPath(packageAlias(['fw', 'TOKEN']))).toMatchObject({ token: 'TOKEN', feature: 'firmware' });
    // Token-less over DTLS.
    expect(parseApiPath(packageAlias(['fw']))).toMatchObject({ token: undefined, feature: 'firmware' });
    // Anything else is left alone (and answered 4.04 by the router).
    expect(packageAlias(['fw', 'TOKEN', 'extra'])).toEqual(['fw', 'TOKEN', 'extra']);
    expect(packageAlias(['api', 'v1', 'TOKEN', 'telemetry'])).toEqual(['api', 'v1', 'TOKEN', 'telemetry']);
  });

  it('reads the provisioning path without a token', () => {
    expect(parseApiPath(['api', 'v1', 'provision'])).toMatchObject({ token: undefined, feature: 'provision' });
  });
});
