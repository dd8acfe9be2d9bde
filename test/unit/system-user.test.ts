// Users and groups as doctor reads them from /etc/passwd and /etc/group: the service's user with its
// supplementary groups, and the names of file owners.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SystemAccounts } from '../../src/ops/system-user.js';

const dir = mkdtempSync(join(tmpdir(), 'coap2mqtt-accounts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function accounts(passwd: string, group: string): SystemAccounts {
  const files = { passwd: join(dir, `passwd-${passwd.length}`), group: join(dir, `group-${group.length}`) };
  writeFileSync(files.passwd, passwd);
  writeFileSync(files.group, group);
  return new SystemAccounts(files);
}

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  '# a comment line',
  'coap2mqtt:x:998:997:coap2mqtt gateway:/var/lib/coap2mqtt:/usr/sbin/nologin',
  'pi:x:1000:1000::/home/pi:/bin/bash',
  '',
].join('\n');
const GROUP = ['root:x:0:', 'coap2mqtt:x:997:', 'dialout:x:20:pi,coap2mqtt', 'ssl-cert:x:110:coap2mqtt', 'pi:x:1000:', 'coap2mqtt-admins:x:500:pi'].join('\n');

describe('system accounts', () => {
  it('finds the service user with its primary group and the groups that list it as a member', () => {
    const user = accounts(PASSWD, GROUP).user('coap2mqtt');
    expect(user).toEqual({ name: 'coap2mqtt', uid: 998, gid: 997, groups: new Set([997, 20, 110]) });
  });

  it('has no user for a name this box does not know', () => {
    expect(accounts(PASSWD, GROUP).user('nobody-here')).toBeUndefined();
  });

  it('names the owner and group of a file by number', () => {
    const box = accounts(PASSWD, GROUP);
    expect(box.userName(998)).toBe('coap2mqtt');
    expect(box.userName(0)).toBe('root');
    expect(box.userName(4242)).toBeUndefined();
    expect(box.groupName(110)).toBe('ssl-cert');
    expect(box.groupName(4242)).toBeUndefined();
  });

  it('knows nobody when the files cannot be read', () => {
    const box = new SystemAccounts({ passwd: join(dir, 'missing-passwd'), group: join(dir, 'missing-group') });
    expect(box.user('coap2mqtt')).toBeUndefined();
    expect(box.userName(0)).toBeUndefined();
    expect(box.groupName(0)).toBeUndefined();
  });

  it("reads this box's own files by default: uid 0 and gid 0 are root's", () => {
    expect(new SystemAccounts().userName(0)).toBe('root');
    expect(new SystemAccounts().groupName(0)).toBe('root');
  });
});
