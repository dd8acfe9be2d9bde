// Users and groups of this box, from /etc/passwd and /etc/group. Node can tell only the current user
// (os.userInfo); doctor asks about the service's user while running as root or a technician, and names
// the owners of files. Users that live only in LDAP or systemd-homed are not seen: for those it says less.
import { readFileSync } from 'node:fs';

export interface SystemUser {
  readonly name: string;
  readonly uid: number;
  /** The primary group. */
  readonly gid: number;
  /** The primary group and every group that lists the user as a member. */
  readonly groups: ReadonlySet<number>;
}

export interface AccountFiles {
  readonly passwd: string;
  readonly group: string;
}

const SYSTEM_FILES: AccountFiles = { passwd: '/etc/passwd', group: '/etc/group' };

export class SystemAccounts {
  constructor(private readonly files: AccountFiles = SYSTEM_FILES) {}

  /** The user called `name`, or undefined when this box has none. */
  user(name: string): SystemUser | undefined {
    const entry = this.entries(this.files.passwd).find((fields) => fields[0] === name);
    if (!entry) return undefined;
    const uid = Number(entry[2]);
    const gid = Number(entry[3]);
    const groups = new Set<number>([gid]);
    for (const fields of this.entries(this.files.group)) {
      if ((fields[3] ?? '').split(',').includes(name)) groups.add(Number(fields[2]));
    }
    return { name, uid, gid, groups };
  }

  userName(uid: number): string | undefined {
    return this.entries(this.files.passwd).find((fields) => Number(fields[2]) === uid)?.[0];
  }

  groupName(gid: number): string | undefined {
    return this.entries(this.files.group).find((fields) => Number(fields[2]) === gid)?.[0];
  }

  /** "name:x:uid:gid:..." lines as fields; none when the file cannot be read. */
  private entries(path: string): string[][] {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.split(':'));
  }
}
