// Parses LogQL queries (a JSON array on stdin) with Grafana's own grammar (@grafana/lezer-logql)
// and prints, as a JSON array, the number of syntax errors in each.
const path = require('path');
const { parser } = require(path.join(process.env.MCP_GATEWAY_PEERS, 'npm/node_modules/@grafana/lezer-logql'));
let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const errors = JSON.parse(input).map((q) => {
    let n = 0;
    parser.parse(q).iterate({ enter: (node) => { if (node.type.isError) n++; } });
    return n;
  });
  process.stdout.write(JSON.stringify(errors));
});
