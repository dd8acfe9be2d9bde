import { spawn } from 'node:child_process';

/** One message as libcoap's coap-client prints it at -v 6. */
export interface DumpedMessage {
  readonly type: 'CON' | 'NON' | 'ACK' | 'RST';
  readonly code: string;
  readonly messageId: number;
  readonly options: ReadonlyMap<string, string[]>;
  /** Text payloads; binary ones (dumped as hex on the lines after) are undefined. */
  readonly payload: string | undefined;
}

export interface CoapClientResult {
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Every message sent or received, in order. */
  readonly messages: DumpedMessage[];
  /** The final response (the last message with a response code), if any arrived. */
  readonly response: DumpedMessage | undefined;
}

const DUMP = /^v:1 t:(CON|NON|ACK|RST) c:(\S+) i:([0-9a-f]+) \{[0-9a-f]*\} \[ ?(.*?) ?\](?: :: (?:'(.*)'|binary data length \d+))?$/;

export function parseDump(stdout: string): DumpedMessage[] {
  const messages: DumpedMessage[] = [];
  for (const line of stdout.split('\n')) {
    // coap-client writes received payloads without a newline, so a dump may follow one on the same line.
    const start = line.indexOf('v:1 t:');
    const match = start < 0 ? null : DUMP.exec(line.slice(start).trim());
    if (!match) continue;
    const options = new Map<string, string[]>();
    for (const option of match[4] ? match[4].split(', ') : []) {
      const colon = option.indexOf(':');
      const name = colon < 0 ? option : option.slice(0, colon);
      const value = colon < 0 ? '' : option.slice(colon + 1);
      options.set(name, [...(options.get(name) ?? []), value]);
    }
    messages.push({
      type: match[1] as DumpedMessage['type'],
      code: match[2]!,
      messageId: Number.parseInt(match[3]!, 16),
      options,
      payload: match[5],
    });
  }
  return messages;
}

/**
 * Runs libcoap's coap-client (a real device stand-in). `args` are coap-client options before the URI,
 * e.g. ['-m', 'post', '-e', '{"t":1}'].
 */
export function coapClient(uri: string, args: string[] = [], options: { binary?: string; timeoutSeconds?: number } = {}): Promise<CoapClientResult> {
  const binary = options.binary ?? 'coap-client-notls';
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['-v', '6', '-B', String(options.timeoutSeconds ?? 10), ...args, uri], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (exitCode) => {
      const messages = parseDump(stdout);
      const responses = messages.filter((m) => /^[2-5]\.\d\d$/.test(m.code));
      resolve({ exitCode, stdout, stderr, messages, response: responses.at(-1) });
    });
  });
}

/** A coap-client left running (e.g. `-s 30` observing), read as its messages arrive. */
export interface RunningCoapClient {
  /** Every message sent or received so far, in order. */
  readonly messages: DumpedMessage[];
  /** Received responses/notifications so far (messages with a 2.xx–5.xx code). */
  responses(): DumpedMessage[];
  /** Resolves once at least `count` responses have arrived. */
  waitForResponses(count: number, timeoutMs?: number): Promise<DumpedMessage[]>;
  /** Resolves with the exit code when the client ends on its own. */
  readonly exited: Promise<number | null>;
  /** SIGINT, as a technician's Ctrl-C. */
  stop(): Promise<number | null>;
  stdout(): string;
  stderr(): string;
}

export function spawnCoapClient(uri: string, args: string[] = [], options: { binary?: string } = {}): RunningCoapClient {
  // stdbuf: coap-client's stdout is block-buffered on a pipe, which would hide notifications until exit.
  const child = spawn('stdbuf', ['-oL', options.binary ?? 'coap-client-notls', '-v', '6', ...args, uri], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const messages: DumpedMessage[] = [];
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop()!;
    messages.push(...parseDump(lines.join('\n')));
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const responses = () => messages.filter((m) => /^[2-5]\.\d\d$/.test(m.code));
  return {
    messages,
    responses,
    exited,
    async waitForResponses(count, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (responses().length < count) {
        if (Date.now() > deadline) {
          throw new Error(`timed out waiting for ${count} responses; got ${responses().length}. stdout:\n${stdout}\nstderr:\n${stderr}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return responses();
    },
    stop() {
      if (child.exitCode === null) child.kill('SIGINT');
      return exited;
    },
    stdout: () => stdout,
    stderr: () => stderr,
  };
}
