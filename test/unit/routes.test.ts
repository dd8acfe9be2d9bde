import { describe, expect, it } from 'vitest';
import { pathSegments } from '../../src/coap/routes/index.js';
import { parseApiPath } from '../../src/coap/routes/thingsboard.js';

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
