// The floor: the least a Node UDP server can do per request. It reads only the 4-byte header and the
// token, and answers a piggybacked 2.01 ACK; no parsing, no deduplication, no state.
import dgram from 'node:dgram';

const port = Number(process.argv[2]);
const CREATED = 0x41;

const socket = dgram.createSocket('udp4');
socket.on('message', (datagram, peer) => {
  if (datagram.length < 4 || (datagram[0]! & 0xf0) !== 0x40) return; // CON requests only
  const tokenLength = datagram[0]! & 0x0f;
  if (tokenLength > 8 || datagram.length < 4 + tokenLength) return;
  const response = Buffer.allocUnsafe(4 + tokenLength);
  response[0] = 0x60 | tokenLength; // version 1, ACK
  response[1] = CREATED;
  datagram.copy(response, 2, 2, 4 + tokenLength); // message id and token
  socket.send(response, peer.port, peer.address);
});
socket.bind(port, '127.0.0.1', () => {
  socket.setRecvBufferSize(4 << 20);
  socket.setSendBufferSize(4 << 20);
  process.stdout.write(`ready ${port}\n`);
});
process.once('SIGTERM', () => socket.close());
