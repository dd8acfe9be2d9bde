// One key per sender for limits that must not be dodged by changing port or IPv6 interface identifier.

/**
 * What per-address limits count under (unknown tokens, unfinished DTLS handshakes): the IPv4 address (an
 * IPv4-mapped IPv6 one as IPv4), or the /64 prefix of an IPv6 address, since anyone holding one IPv6
 * address holds its whole /64. Ports never: NAT rebinding changes them, and a flooder has 64k of them.
 */
export function sourceKey(address: string): string {
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  const [host = '', zone] = address.split('%');
  const [head = '', tail] = host.split('::');
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const headGroups = groups(head);
  let expanded = headGroups;
  if (tail !== undefined) {
    const tailGroups = groups(tail);
    // A dotted IPv4 tail ("::1.2.3.4") stands for two groups.
    const tailWidth = tailGroups.length + (tailGroups.at(-1)?.includes('.') ? 1 : 0);
    expanded = [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailWidth)).fill('0'), ...tailGroups];
  }
  const prefix = expanded
    .slice(0, 4)
    .map((group) => (Number.parseInt(group, 16) || 0).toString(16))
    .join(':');
  return `${prefix}::/64${zone === undefined ? '' : `%${zone}`}`;
}
