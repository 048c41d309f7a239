// Preloaded into server-everything (node --require): it listens on all interfaces by default;
// the tests' servers must listen on loopback only.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = typeof args[0] === 'string' && /^[0-9]+$/.test(args[0]) ? Number(args[0]) : args[0];
  if (typeof port === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args[0] = port;
    args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && args[0].host === undefined) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
