// The baseline: a bare node-coap server (default options) answering 2.01 to every POST.
import coap from 'coap';

const port = Number(process.argv[2]);

const server = coap.createServer((request, response) => {
  response.code = request.method === 'POST' ? '2.01' : '4.05';
  response.end();
});
server.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${port}\n`));
process.once('SIGTERM', () => server.close());
