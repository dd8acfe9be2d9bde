// Fuzzing a real gateway process (node dist/cli.js) on its device side: random datagrams, mutated headers,
// options, tokens and paths, and above all mutated JSON on the uplink paths (telemetry, attributes, RPC
// replies, claims, client-side RPCs) with valid access tokens. The process must stay up and keep serving,
// never answer 5.00 (a handler that threw), never drop its upstream connection, and publish only messages
// ThingsBoard accepts (gateway-api-validator.ts): one bad message upstream would close the real server's
// session for every device.
//
// Deterministic: a fixed seed unless FUZZ_SEED is set; the seed is printed, FUZZ_SEED=<seed> replays a run.
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as coapPacket from 'coap-packet';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { gatewayApiViolations } from '../helpers/gateway-api-validator.js';
import { GatewayProcess, gatewayConfig, killAllGatewayProcesses, makeDevices, writeConfigFile } from '../helpers/gateway-process.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { eventually, freeUdpPort, sleep } from '../helpers/ports.js';
import { Random } from '../helpers/random.js';
import { GENEROUS_SESSION_LIMITS, ThingsBoardDouble } from '../helpers/thingsboard-double.js';

const DEVICES = makeDevices(3);
const SEED = 20_251_122;

let broker: Mosquitto;
let tb: ThingsBoardDouble;
let gateway: GatewayProcess;
let port: number;
let dir: string;

beforeAll(async () => {
  broker = await Mosquitto.start();
  tb = await ThingsBoardDouble.connect(broker.url);
  // The gateway's own RPCs: session limits when it asks, and an echo for the devices' client-side RPCs.
  tb.answerOwnRpcs((request) => (request.method === 'getSessionLimits' ? GENEROUS_SESSION_LIMITS : { echo: request.method }));
  dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-fuzz-'));
  port = await freeUdpPort();
  const config = gatewayConfig({
    port,
    brokerUrl: broker.url,
    stateDir: join(dir, 'state'),
    devices: DEVICES,
    extra: {
      upstream: { sessionLimitsTimeoutMs: 2000 },
      // The fuzz must reach the JSON parsers: no 4.29 for the flood, no block for the random tokens.
      limits: { deviceRequestsPerSecond: 0, unknownTokenFailures: 0 },
      sessions: { clientRpcTimeoutMs: 1000 },
    },
  });
  gateway = GatewayProcess.start(writeConfigFile(dir, config));
  await gateway.ready();
  await gateway.waitForLog(/upstream broker connected/);
});

afterAll(async () => {
  await killAllGatewayProcesses();
  await tb?.close();
  await broker?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  expect(gateway.running, gateway.describe()).toBe(true);
});

// ---------------------------------------------------------------------------------------------------------
// Raw CoAP encoding, with room for everything a parser must survive.

interface RawMessage {
  version?: number;
  /** 0 CON, 1 NON, 2 ACK, 3 RST */
  type?: number;
  /** Token length nibble; by default the token's real length. */
  tkl?: number;
  code: number;
  messageId: number;
  token: Buffer;
  /** Option number and value, encoded in the order given (deltas may go negative: clamped to 0). */
  options: Array<[number, Buffer]>;
  payload?: Buffer;
}

const POST = 0x02;
const GET = 0x01;

function nibble(value: number): { nibble: number; extended: Buffer } {
  if (value < 13) return { nibble: value, extended: Buffer.alloc(0) };
  if (value < 269) return { nibble: 13, extended: Buffer.from([value - 13]) };
  const extended = Buffer.alloc(2);
  extended.writeUInt16BE(Math.min(value - 269, 0xffff));
  return { nibble: 14, extended };
}

function encode(message: RawMessage): Buffer {
  const header = Buffer.alloc(4);
  header[0] = (((message.version ?? 1) & 3) << 6) | (((message.type ?? 0) & 3) << 4) | ((message.tkl ?? message.token.length) & 0xf);
  header[1] = message.code & 0xff;
  header.writeUInt16BE(message.messageId & 0xffff, 2);
  const parts: Buffer[] = [header, message.token];
  let previous = 0;
  for (const [number, value] of message.options) {
    const delta = nibble(Math.max(0, number - previous));
    const length = nibble(value.length);
    parts.push(Buffer.from([(delta.nibble << 4) | length.nibble]), delta.extended, length.extended, value);
    previous = Math.max(previous, number);
  }
  if (message.payload && message.payload.length > 0) parts.push(Buffer.from([0xff]), message.payload);
  return Buffer.concat(parts);
}

const sortedOptions = (options: Array<[number, Buffer]>): Array<[number, Buffer]> => [...options].sort((a, b) => a[0] - b[0]);
const uriPath = (path: string): Array<[number, Buffer]> => path.split('/').filter(Boolean).map((segment) => [11, Buffer.from(segment)]);
const uint = (value: number): Buffer => {
  const bytes: number[] = [];
  for (let v = value; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from(bytes);
};

// ---------------------------------------------------------------------------------------------------------
// A fuzzing device: many requests, one socket, every answer counted by the category of its request.

interface Sent {
  readonly category: string;
  readonly description: string;
}

class Fuzzer {
  private readonly socket = dgram.createSocket('udp4');
  private readonly byToken = new Map<string, Sent>();
  private readonly byMessageId = new Map<number, Sent>();
  private tokenCounter = 0;
  private messageId = 1;
  readonly answers = new Map<string, Map<string, number>>();
  readonly internalErrors: string[] = [];
  lastAnswerAt = Date.now();
  sent = 0;

  private constructor() {
    this.socket.on('error', () => {});
    this.socket.on('message', (datagram) => {
      this.lastAnswerAt = Date.now();
      let packet: coapPacket.ParsedPacket;
      try {
        packet = coapPacket.parse(datagram);
      } catch {
        this.count('unparseable answers', 'garbage');
        return;
      }
      if (packet.confirmable) {
        this.socket.send(coapPacket.generate({ code: '0.00', ack: true, messageId: packet.messageId, token: Buffer.alloc(0) }), port, '127.0.0.1');
      }
      const sent = this.byToken.get(packet.token.toString('hex')) ?? (packet.ack || packet.reset ? this.byMessageId.get(packet.messageId) : undefined);
      const code = packet.reset ? 'RST' : packet.code;
      if (code === '0.00') return;
      this.count(sent?.category ?? 'unmatched', code);
      if (code === '5.00') this.internalErrors.push(`${sent?.category ?? '?'}: ${sent?.description ?? '?'} → 5.00 ${packet.payload.toString()}`);
    });
  }

  static async open(): Promise<Fuzzer> {
    const fuzzer = new Fuzzer();
    await new Promise<void>((resolve) => fuzzer.socket.bind(0, '127.0.0.1', resolve));
    return fuzzer;
  }

  private count(category: string, code: string): void {
    const codes = this.answers.get(category) ?? new Map<string, number>();
    codes.set(code, (codes.get(code) ?? 0) + 1);
    this.answers.set(category, codes);
  }

  /** A fresh token and message id, remembered so the answer can be attributed. */
  ids(category: string, description: string): { token: Buffer; messageId: number } {
    const token = Buffer.alloc(4);
    token.writeUInt32BE(++this.tokenCounter);
    const messageId = this.messageId++ & 0xffff;
    const sent = { category, description };
    this.byToken.set(token.toString('hex'), sent);
    this.byMessageId.set(messageId, sent);
    return { token, messageId };
  }

  async send(datagram: Buffer): Promise<void> {
    this.sent++;
    this.socket.send(datagram, port, '127.0.0.1');
    // Paced so the kernel's socket buffers do not drop what the gateway should see.
    if (this.sent % 40 === 0) await sleep(8);
  }

  /** Waits until no answer has come for `quietMs`. */
  async settle(quietMs = 600, timeoutMs = 15_000): Promise<void> {
    await eventually(() => Date.now() - this.lastAnswerAt > quietMs, timeoutMs, 'the gateway to finish answering');
  }

  codes(category: string): Map<string, number> {
    return this.answers.get(category) ?? new Map();
  }

  summary(): string {
    return [...this.answers]
      .map(([category, codes]) => `${category}: ${[...codes].sort().map(([code, count]) => `${code}×${count}`).join(' ')}`)
      .join('; ');
  }

  close(): void {
    this.socket.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// JSON worth feeding a parser, as text (so number literals and escapes stay exactly as written).

const NUMBER_LITERALS = [
  '0', '-0', '1', '-1', '42', '21.5', '0.1', '1.0', '-0.0', '1e2', '1E2', '1e-7', '2e-7', '1.5e-7', '0.0000001', '1e-300', '5e-324',
  '1e21', '1E400', '-1e400', '1.7976931348623157e308', '9007199254740993', '9223372036854775807', '9223372036854775808',
  '-9223372036854775808', '-9223372036854775809', '123456789012345678901234567890', '100000000000000000000', '0e0', '1.7e12',
];
const STRING_PIECES = [
  'temp', 'a', '', ' ', 'ü', 'e\u0301', '日本', '🌡', '\u202e', '\ufeff', '\uffff', '\\u0000', '\\ud800', '\\udfff', '\\ud83c\\udf21', '\\n', '\\t',
  '\\"', '\\\\', '\\/', '__proto__', 'constructor', 'ts', 'values', 'method', 'params', 'deleted', '%s%n', '${x}', '<script>', 'NaN', 'null',
];
const TS_LITERALS = ['1700000000000', '0', '-1', '1.5', '"1700000000000"', '"17e11"', '1e21', '9007199254740993', '"9999999999999999"', '"0001"', 'null', '"abc"', '1.7e12', 'true', '[]', '{}'];

function stringLiteral(random: Random, maxPieces = 4): string {
  let text = '';
  for (let i = random.int(0, maxPieces); i > 0; i--) text += random.pick(STRING_PIECES);
  return `"${text}"`;
}

function jsonValue(random: Random, depth: number): string {
  const roll = random.next();
  if (depth > 4 || roll < 0.3) return random.pick(NUMBER_LITERALS);
  if (roll < 0.5) return stringLiteral(random);
  if (roll < 0.6) return random.pick(['true', 'false', 'null']);
  if (roll < 0.75) return `[${Array.from({ length: random.int(0, 4) }, () => jsonValue(random, depth + 1)).join(',')}]`;
  return jsonObject(random, depth + 1);
}

function jsonObject(random: Random, depth: number, keys = random.int(0, 5)): string {
  const members = Array.from({ length: keys }, () => `${stringLiteral(random, 2)}:${jsonValue(random, depth)}`);
  return `{${members.join(',')}}`;
}

function deepNesting(random: Random): string {
  const depth = random.pick([30, 31, 32, 33, 34, 64, 1000, 4000]);
  return random.chance(0.5) ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

function huge(random: Random): Buffer {
  const length = random.pick([1200, 5000, 16_000, 16_384, 20_000]);
  switch (random.int(0, 3)) {
    case 0:
      return Buffer.from(`{"big":"${'x'.repeat(length)}"}`);
    case 1: // Invalid UTF-8 in a string: refused (4.00), never sent upstream as U+FFFD.
      return Buffer.concat([Buffer.from('{"ff":"'), Buffer.alloc(length, 0xff), Buffer.from('"}')]);
    case 2:
      return Buffer.from(`{${Array.from({ length: Math.floor(length / 12) }, (_, i) => `"k${i}":${i}`).join(',')}}`);
    default:
      return Buffer.from(`[${Array.from({ length: Math.floor(length / 40) }, (_, i) => `{"ts":${1700000000000 + i},"values":{"v":${i}}}`).join(',')}]`);
  }
}

/** Byte-level damage to a valid text. */
function mutate(random: Random, text: Buffer): Buffer {
  const bytes = Buffer.from(text);
  switch (random.int(0, 7)) {
    case 0:
      return bytes.subarray(0, random.int(0, bytes.length));
    case 1:
      for (let i = random.int(1, 3); i > 0 && bytes.length > 0; i--) bytes[random.int(0, bytes.length - 1)] = random.int(0, 255);
      return bytes;
    case 2: {
      const at = random.int(0, bytes.length);
      return Buffer.concat([bytes.subarray(0, at), random.bytes(random.int(1, 4)), bytes.subarray(at)]);
    }
    case 3:
      return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]);
    case 4: {
      const at = random.int(0, bytes.length);
      return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at)]).subarray(0, Math.max(0, bytes.length - 1));
    }
    case 5:
      return Buffer.from(bytes.toString('latin1').replace(/[0-9]/, 'e'), 'latin1');
    case 6:
      return Buffer.from(bytes.toString().replace(/}$/, ',}'));
    default:
      return Buffer.concat([bytes, bytes]);
  }
}

// Payloads per uplink path.
function telemetryPayload(random: Random): string {
  switch (random.int(0, 6)) {
    case 0:
      return jsonObject(random, 0);
    case 1:
      return `[${Array.from({ length: random.int(0, 4) }, () => jsonObject(random, 1)).join(',')}]`;
    case 2:
      return `{"ts":${random.pick(TS_LITERALS)},"values":${random.chance(0.8) ? jsonObject(random, 1) : jsonValue(random, 1)}}`;
    case 3:
      return `[${Array.from({ length: random.int(1, 4) }, () => `{"ts":${random.pick(TS_LITERALS)},"values":${jsonObject(random, 1)}}`).join(',')}]`;
    case 4:
      return `{"v":${random.pick(NUMBER_LITERALS)}}`;
    case 5:
      return jsonValue(random, 0);
    default:
      return `{"ts":${random.pick(TS_LITERALS)},"values":${jsonObject(random, 1)},"extra":${jsonValue(random, 2)}}`;
  }
}

function attributesPayload(random: Random): string {
  return random.chance(0.8) ? jsonObject(random, 0) : jsonValue(random, 0);
}

function claimPayload(random: Random): string {
  return random.pick([
    '',
    '{}',
    `{"secretKey":${random.chance(0.5) ? stringLiteral(random) : jsonValue(random, 1)}}`,
    `{"durationMs":${random.pick(NUMBER_LITERALS)}}`,
    `{"secretKey":${stringLiteral(random)},"durationMs":${random.pick(NUMBER_LITERALS)}}`,
    `{"secretKey":"s","durationMs":60000,"extra":${jsonValue(random, 1)}}`,
    jsonValue(random, 0),
  ]);
}

const RPC_IDS = ['5', '0', '007', '-1', '1e3', '5.0', ' 5', '0x1f', '٣', '', '2147483647', '2147483648', '4294967301', '999999999999999', '9999999999999999', '12345678901234567890'];

function clientRpcPayload(random: Random): string {
  return random.pick([
    `{"method":${stringLiteral(random)},"params":${jsonValue(random, 1)}}`,
    `{"method":${jsonValue(random, 1)}}`,
    `{"params":${jsonValue(random, 1)}}`,
    jsonValue(random, 0),
  ]);
}

interface Uplink {
  readonly category: string;
  readonly path: string;
  readonly payload: Buffer;
}

function uplink(random: Random): Uplink {
  const token = random.pick(DEVICES).token;
  const roll = random.next();
  let category: string;
  let path: string;
  let text: string;
  if (roll < 0.4) {
    category = 'telemetry';
    path = `/api/v1/${token}/telemetry`;
    text = telemetryPayload(random);
  } else if (roll < 0.62) {
    category = 'attributes';
    path = `/api/v1/${token}/attributes`;
    text = attributesPayload(random);
  } else if (roll < 0.82) {
    category = 'rpc reply';
    path = `/api/v1/${token}/rpc/${random.chance(0.7) ? random.int(0, 1000) : random.pick(RPC_IDS)}`;
    text = jsonValue(random, 0);
  } else if (roll < 0.94) {
    category = 'claim';
    path = `/api/v1/${token}/claim`;
    text = claimPayload(random);
  } else {
    category = 'client rpc';
    path = `/api/v1/${token}/rpc`;
    text = clientRpcPayload(random);
  }
  let payload: Buffer = Buffer.from(text);
  const special = random.next();
  if (special < 0.05) payload = Buffer.from(category === 'telemetry' || category === 'attributes' ? `{"deep":${deepNesting(random)}}` : deepNesting(random));
  else if (special < 0.08) payload = huge(random);
  else if (special < 0.35) payload = mutate(random, payload);
  return { category, path, payload };
}

function contentFormat(random: Random): Array<[number, Buffer]> {
  const roll = random.next();
  if (roll < 0.6) return [];
  if (roll < 0.85) return [[12, uint(50)]];
  return [[12, uint(random.pick([0, 42, 60, 11542, 65535]))]];
}

// ---------------------------------------------------------------------------------------------------------

/** The gateway still serves a plain reading, and it arrives upstream. */
async function probe(fuzzer: Fuzzer, label: string): Promise<void> {
  const { token, messageId } = fuzzer.ids('probe', label);
  const marker = `probe-${label}-${Date.now()}`;
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const answer = new Promise<coapPacket.ParsedPacket>((resolve) => socket.on('message', (datagram) => resolve(coapPacket.parse(datagram))));
    socket.send(
      encode({ code: POST, messageId, token, options: uriPath(`/api/v1/${DEVICES[0]!.token}/telemetry`), payload: Buffer.from(JSON.stringify({ probe: marker })) }),
      port,
      '127.0.0.1',
    );
    const packet = await Promise.race([answer, sleep(3000).then(() => undefined)]);
    expect(packet?.code, `probe after ${label}: ${gateway.describe()}`).toBe('2.01');
    await eventually(() => tb.received.some((m) => m.topic === 'v1/gateway/telemetry' && m.text.includes(marker)), 10_000, `probe ${label} upstream`);
  } finally {
    socket.close();
  }
}

/** Waits until nothing new has arrived upstream for a moment (the outbox sends after answering). */
async function upstreamQuiet(quietMs = 400): Promise<void> {
  let count = -1;
  let since = Date.now();
  await eventually(
    () => {
      if (tb.received.length !== count) {
        count = tb.received.length;
        since = Date.now();
      }
      return Date.now() - since >= quietMs;
    },
    15_000,
    'upstream to go quiet',
  );
}

function expectHealthy(fuzzer: Fuzzer, label: string): void {
  // Soft: one run reports every kind of trouble it found, not only the first.
  expect.soft(gateway.running, gateway.describe()).toBe(true);
  expect.soft(fuzzer.internalErrors, `requests answered 5.00 (a handler threw) during ${label}`).toEqual([]);
  // pino writes levels as names here ("error"); numbers are accepted too.
  const trouble = gateway.logs().filter(
    (line) => ['error', 'fatal'].includes(String(line.level)) || Number(line.level) >= 50 || /connection lost|reconnected/.test(String(line.msg)),
  );
  expect.soft(trouble.map((line) => JSON.stringify(line)), `error logs or upstream drops during ${label}`).toEqual([]);
  const violations = gatewayApiViolations(tb.received);
  expect.soft(violations.slice(0, 20), `${violations.length} upstream message(s) ThingsBoard would refuse`).toEqual([]);
}

describe('fuzzing the device side', () => {
  it('survives random datagrams and mutated headers, options, tokens and paths', async () => {
    const random = Random.fromEnv('FUZZ_SEED', SEED);
    console.log(`[fuzz] CoAP layer: seed ${random.seed} (replay: FUZZ_SEED=${random.seed})`);
    const fuzzer = await Fuzzer.open();
    try {
      const validToken = (): string => random.pick(DEVICES).token;
      for (let i = 0; i < 2400; i++) {
        const kind = i % 4;
        if (kind === 0) {
          // Random bytes, half of them with a plausible first byte so they get past the version check.
          const bytes = random.bytes(random.int(0, 96));
          if (bytes.length > 0 && random.chance(0.5)) bytes[0] = (bytes[0]! & 0x3f) | 0x40;
          const { messageId } = fuzzer.ids('random bytes', bytes.toString('hex'));
          if (bytes.length >= 4) bytes.writeUInt16BE(messageId, 2);
          await fuzzer.send(bytes);
        } else if (kind === 1) {
          // Header: version, type, token length (9–15 are reserved), any code, empty messages with a body.
          const { token, messageId } = fuzzer.ids('header', `header #${i}`);
          const code = random.chance(0.5) ? random.pick([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x1f, 0x41, 0x44, 0x84, 0xa0, 0xe0, 0xff]) : random.int(0, 255);
          const datagram = encode({
            version: random.chance(0.85) ? 1 : random.int(0, 3),
            type: random.int(0, 3),
            tkl: random.chance(0.2) ? random.int(0, 15) : undefined,
            code,
            messageId,
            token: random.chance(0.8) ? token : random.bytes(random.int(0, 8)),
            options: uriPath(`/api/v1/${validToken()}/telemetry`),
            payload: Buffer.from(`{"header":${i}}`),
          });
          await fuzzer.send(datagram);
        } else if (kind === 2) {
          // Options: unknown critical and elective numbers, odd lengths, extended forms, Block1/2, Observe,
          // Content-Format, Uri-Host/Port, Proxy-Uri, Size1, repeated and oversized values.
          const { token, messageId } = fuzzer.ids('options', `options #${i}`);
          const options: Array<[number, Buffer]> = [...uriPath(`/api/v1/${validToken()}/${random.pick(['telemetry', 'attributes', 'claim', 'rpc'])}`)];
          for (let n = random.int(1, 4); n > 0; n--) {
            const number = random.pick([1, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 17, 20, 23, 27, 28, 35, 39, 60, 258, 1234, 2049, 65000, random.int(0, 70000)]);
            const length = random.pick([0, 1, 2, 3, 4, 8, 12, 13, 14, 255, 268, 269, 300, 1100]);
            options.push([number, random.bytes(length)]);
          }
          let datagram = encode({
            type: random.chance(0.8) ? 0 : 1,
            code: random.chance(0.85) ? POST : GET,
            messageId,
            token,
            options: random.chance(0.85) ? sortedOptions(options) : options,
            payload: Buffer.from(`{"options":${i}}`),
          });
          // Now and then a raw nibble of 15 (reserved) or a length running past the end.
          if (random.chance(0.15)) {
            datagram = Buffer.from(datagram);
            const at = random.int(4 + token.length, Math.max(4 + token.length, datagram.length - 1));
            datagram[at] = random.pick([0xf0, 0x0f, 0xdd, 0xee, 0xde, 0xed, 0x1d, 0xd1]);
          }
          if (random.chance(0.1)) datagram = datagram.subarray(0, random.int(4, datagram.length));
          await fuzzer.send(datagram);
        } else {
          // Paths and tokens: unknown and half-right tokens, odd segments, one option holding slashes.
          const { token, messageId } = fuzzer.ids('paths', `path #${i}`);
          const segments = [
            random.pick(['api', 'API', 'api', '', '..', 'api%2Fv1', '\u0000']),
            random.pick(['v1', 'v2', 'V1', '', '.']),
            random.pick([validToken(), validToken(), `${validToken()}x`, validToken().toUpperCase(), '', ' ', 'telemetry', 'rpc', random.bytes(random.int(1, 40)).toString('latin1'), 'a'.repeat(random.pick([64, 255, 400]))]),
            random.pick(['telemetry', 'attributes', 'rpc', 'claim', 'provision', 'firmware', 'TELEMETRY', 'updates', '', 'x'.repeat(300)]),
            ...(random.chance(0.3) ? [random.pick(['5', 'updates', '', '..', '1/2', random.bytes(6).toString('latin1')])] : []),
          ];
          const options: Array<[number, Buffer]> = random.chance(0.15)
            ? [[11, Buffer.from(segments.join('/'), 'latin1')]]
            : segments.map((segment) => [11, Buffer.from(segment, 'latin1')] as [number, Buffer]);
          if (random.chance(0.2)) options.push([15, Buffer.from(random.pick(['clientKeys=a,b', 'sharedKeys=', '=', 'clientKeys', '&&&', 'sharedKeys=\u0000']))]);
          await fuzzer.send(encode({ code: random.chance(0.8) ? POST : GET, messageId, token, options: sortedOptions(options), payload: Buffer.from('{"path":1}') }));
        }
      }
      await fuzzer.settle();
      console.log(`[fuzz] CoAP layer: ${fuzzer.sent} datagrams; answers ${fuzzer.summary()}`);
      // The mutations reached every layer: format errors reset, bad options and paths refused, some accepted.
      expect(fuzzer.codes('random bytes').get('RST') ?? 0).toBeGreaterThan(0);
      expect(fuzzer.codes('options').get('4.02') ?? 0).toBeGreaterThan(0);
      expect([...fuzzer.codes('paths').keys()]).toEqual(expect.arrayContaining(['4.01', '4.04']));
      expect(fuzzer.codes('header').get('2.01') ?? 0).toBeGreaterThan(0);
      await probe(fuzzer, 'CoAP-layer fuzz');
      await upstreamQuiet();
      expectHealthy(fuzzer, 'CoAP-layer fuzz');
    } finally {
      fuzzer.close();
    }
  });

  it('publishes only valid gateway-API messages whatever JSON arrives on telemetry, attributes, RPC replies, claims and client RPCs', async () => {
    const random = Random.fromEnv('FUZZ_SEED', SEED);
    console.log(`[fuzz] JSON paths: seed ${random.seed} (replay: FUZZ_SEED=${random.seed})`);
    const fuzzer = await Fuzzer.open();
    try {
      for (let i = 0; i < 2400; i++) {
        const request = uplink(random);
        const { token, messageId } = fuzzer.ids(request.category, `${request.path} ${request.payload.toString('utf8').slice(0, 300)}`);
        await fuzzer.send(
          encode({
            type: random.chance(0.85) ? 0 : 1,
            code: POST,
            messageId,
            token,
            options: sortedOptions([...uriPath(request.path), ...contentFormat(random)]),
            payload: request.payload,
          }),
        );
      }
      await fuzzer.settle();
      console.log(`[fuzz] JSON paths: ${fuzzer.sent} requests; answers ${fuzzer.summary()}`);
      // Both sides of every parser were exercised: some payloads accepted, some refused.
      for (const category of ['telemetry', 'attributes', 'rpc reply', 'claim']) {
        expect(fuzzer.codes(category).get('2.01') ?? 0, category).toBeGreaterThan(0);
        expect(fuzzer.codes(category).get('4.00') ?? 0, category).toBeGreaterThan(0);
      }
      await probe(fuzzer, 'JSON fuzz');
      await upstreamQuiet();
      expectHealthy(fuzzer, 'JSON fuzz');
      const topics = new Map<string, number>();
      for (const message of tb.received) {
        const topic = message.topic.replace(/\/\d+$/, '/{n}');
        topics.set(topic, (topics.get(topic) ?? 0) + 1);
      }
      console.log(`[fuzz] upstream: ${[...topics].map(([topic, count]) => `${topic}×${count}`).join(', ')}`);
    } finally {
      fuzzer.close();
    }
  });
});
