// The baseline for bench/compare.sh: the minimal relay most people write for this protocol with
// Node's `ws` package. Room by path (/ws = "main", /ws/{room}), clientCount on join and leave, a draw
// is parsed once and the same string is sent to everyone else in the room. No snapshots, no limits.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const argIndex = process.argv.indexOf('--port');
const port = Number(argIndex > 0 ? process.argv[argIndex + 1] : process.env.PORT || 18081);
const rooms = new Map(); // room name -> Set of sockets

const server = http.createServer((req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ noServer: true, maxPayload: 65536 });

server.on('upgrade', (req, socket, head) => {
  const path = new URL(req.url, 'http://localhost').pathname; // the query string is ignored
  const match = /^\/ws(?:\/([A-Za-z0-9_-]{1,64}))?$/.exec(path);
  if (!match) return socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
  wss.handleUpgrade(req, socket, head, (ws) => join(ws, match[1] || 'main'));
});

function broadcastCount(members) {
  const str = JSON.stringify({ type: 'clientCount', clientCount: members.size });
  for (const client of members) if (client.readyState === WebSocket.OPEN) client.send(str);
}

function join(ws, room) {
  if (!rooms.has(room)) rooms.set(room, new Set());
  const members = rooms.get(room);
  members.add(ws);
  broadcastCount(members);
  ws.on('error', () => {}); // a bad frame closes this socket; it must not crash the relay
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const str = data.toString();
    let msg;
    try { msg = JSON.parse(str); } catch { return; }
    if (!msg || typeof msg !== 'object' || (msg.type !== undefined && msg.type !== 'draw')) return;
    for (const client of members) {
      if (client !== ws && client.readyState === WebSocket.OPEN) client.send(str);
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
    else broadcastCount(members);
  });
}

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on ws://127.0.0.1:${server.address().port}`);
});
