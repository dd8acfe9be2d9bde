import { describe, expect, it } from 'vitest';
import { ComponentLoggers, createLogger } from '../../src/log.js';

function capture(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const root = createLogger({ level, pretty: 'always' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { root, lines };
}

describe('logging', () => {
  it('gives components their own levels, changed again by a reload', () => {
    const { root, lines } = capture('info');
    const loggers = new ComponentLoggers(root, { dtls: 'debug', upstream: 'warn' });
    loggers.for('dtls').debug('handshake detail');
    loggers.for('upstream').info('not shown');
    loggers.for('coap').debug('not shown either');
    loggers.for('coap').info('state change');
    expect(lines.map((line) => [line.component, line.msg])).toEqual([
      ['dtls', 'handshake detail'],
      ['coap', 'state change'],
    ]);
    loggers.setLevels('warn', { coap: 'debug' });
    loggers.for('dtls').info('now hidden');
    loggers.for('coap').debug('now shown');
    expect(lines.at(-1)).toMatchObject({ component: 'coap', msg: 'now shown' });
    expect(lines).toHaveLength(3);
  });

  it('writes JSON whenever a destination is given (journald, tests), and censors credentials wherever they appear', () => {
    const { root, lines } = capture('info');
    root.info({ device: { name: 'A', token: 'tok', psk: { identity: 'a', key: 'k' } }, keyHex: '00ff', upstream: { accessToken: 'gw' } }, 'x');
    expect(JSON.stringify(lines[0])).not.toMatch(/tok"|"k"|00ff|"gw"/);
    expect(lines[0]).toMatchObject({ device: { name: 'A', token: '[redacted]', psk: '[redacted]' }, keyHex: '[redacted]' });
  });
});
