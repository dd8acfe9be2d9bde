// A dialect's own error body (thethings.io's {"status":"error","message":..}) as each front end renders it.
import { describe, expect, it } from 'vitest';
import { ContentFormat, ResponseCode } from '../../src/coap/codes.js';
import type { DeviceApi } from '../../src/device-api/index.js';
import { refuse, type Outcome } from '../../src/device-api/outcome.js';
import { refusal } from '../../src/front-ends/coap/render.js';
import { createDeviceHttpApi, type HttpDeviceRequest } from '../../src/front-ends/http/device-http.js';

const body = { status: 'error', message: 'unknown thing token' };

const httpAnswer = (outcome: Outcome) => {
  const api: DeviceApi = { handle: () => ({ operation: 0, outcome }), classify: () => 0 };
  const request: HttpDeviceRequest = {
    method: 'POST',
    segments: ['v2', 'things', 'x'],
    query: [],
    contentType: 'application/json',
    body: Buffer.from('{}'),
    peer: '127.0.0.1',
    receivedAt: 0,
    onClose: () => undefined,
  };
  return createDeviceHttpApi(api).handle(request);
};

describe('a refusal with a body', () => {
  it('is a CoAP JSON answer (Content-Format 50) with its code, and keeps Max-Age', () => {
    const plain = refuse('unauthorized', 'unknown thing token');
    const shaped = refuse('unauthorized', 'unknown thing token', { body });
    expect(plain.kind === 'refused' && refusal(plain.refusal)).toEqual({ code: ResponseCode.Unauthorized, payload: 'unknown thing token' });
    expect(shaped.kind === 'refused' && refusal(shaped.refusal)).toEqual({
      code: ResponseCode.Unauthorized,
      contentFormat: ContentFormat.Json,
      payload: Buffer.from('{"status":"error","message":"unknown thing token"}'),
    });
    const later = refuse('unavailable', 'upstream away', { retryAfterSeconds: 7, body });
    expect(later.kind === 'refused' && refusal(later.refusal)).toMatchObject({ code: ResponseCode.ServiceUnavailable, contentFormat: ContentFormat.Json, maxAge: 7 });
  });

  it('is an HTTP JSON answer with its status and headers; without a body, the text diagnostic', async () => {
    expect(await httpAnswer(refuse('unavailable', 'upstream away', { retryAfterSeconds: 7, body }))).toEqual({
      status: 503,
      body: '{"status":"error","message":"unknown thing token"}',
      contentType: 'application/json',
      headers: { 'Retry-After': '7' },
    });
    expect(await httpAnswer(refuse('bad-request', 'no'))).toEqual({ status: 400, body: 'no\n', contentType: 'text/plain; charset=utf-8' });
  });
});
