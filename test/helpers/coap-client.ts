import { spawn } from 'node:child_process';

/** One message as libcoap's coap-client prints it at -v 6. */
export interface DumpedMessage {
  readonly type: 'CON' | 'NON' | 'ACK' | 'RST';
  readonly code: string;
  readonly messageId: number;
  readonly options: ReadonlyMap<string, string[]>;
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

const DUMP = /^v:1 t:(CON|NON|ACK|RST) c:(\S+) i:([0-9a-f]+) \{[0-9a-f]*\} \[ ?(.*?) ?\](?: :: '(.*)')?$/;

export function parseDump(stdout: string): DumpedMessage[] {
  const messages: DumpedMessage[] = [];
  for (const line of stdout.split('\n')) {
    const match = DUMP.exec(line.trim());
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
