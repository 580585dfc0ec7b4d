// The WhatsApp Cloud API as the load tests need it: every POST is answered at once with 200
// and a fresh wamid, as Meta answers an accepted message. Counts what it received and, on
// SIGTERM, prints the count and exits.
//
//   node benches/fake-graph.js            # 127.0.0.1:18090, or PORT
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 18090);
let received = 0;

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    received += 1;
    const body = `{"messaging_product":"whatsapp","contacts":[],"messages":[{"id":"wamid.bench${received}"}]}`;
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  process.stderr.write(`[fake-graph] listening on 127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => {
  const cpu = process.cpuUsage();
  process.stderr.write(`[fake-graph] ${received} requests, ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s CPU\n`);
  process.exit(0);
});
