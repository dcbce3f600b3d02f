// The node anchor of bench/gateway.py: http-proxy in one process with a keep-alive agent.
// Usage: node proxy.js LISTEN_PORT UPSTREAM_PORT
'use strict';
const http = require('http');
const httpProxy = require('http-proxy');

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
// keepAlive so node reuses upstream connections like nginx's keepalive pool and strangler's pool do.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${upstreamPort}`, agent });
proxy.on('error', (err, req, res) => {
  if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'application/json' });
  res.end('{"error":"bad_gateway"}');
});
http.createServer((req, res) => proxy.web(req, res)).listen(listenPort, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
