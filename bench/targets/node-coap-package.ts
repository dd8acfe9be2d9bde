// The baseline for package downloads: a bare node-coap server (default options) answering every GET with
// the same image, which node-coap cuts into Block2 blocks itself.
import { randomBytes } from 'node:crypto';
import coap from 'coap';

const port = Number(process.argv[2]);
const image = randomBytes(Number(process.argv[3]));

const server = coap.createServer((request, response) => {
  if (request.method !== 'GET') {
    response.code = '4.05';
    response.end();
    return;
  }
  response.setOption('Content-Format', 'application/octet-stream');
  response.end(image);
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${port}\n`));
process.once('SIGTERM', () => server.close());
