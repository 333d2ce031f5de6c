// Usage (after `npm ci` in bench/node-relay): node bench/flood.js ws://127.0.0.1:PORT/ws/ROOM [seconds]
// Floods one room with draws as fast as the socket takes them, for N seconds; reports how it ended.
const WebSocket = require('./node-relay/node_modules/ws');
const [url, seconds] = [process.argv[2], Number(process.argv[3] || 8)];
let flooders = 0, closes = [];
for (let i = 0; i < 4; i++) {
  const ws = new WebSocket(url);
  ws.on('open', () => {
    flooders++;
    const msg = JSON.stringify({color: '#ff0000', startX: 1500, startY: 1, endX: 1501, endY: 1});
    const pump = () => { if (ws.readyState !== 1) return; for (let k = 0; k < 200; k++) ws.send(msg); setImmediate(pump); };
    pump();
  });
  ws.on('close', (code) => closes.push(code));
  ws.on('error', () => {});
}
setTimeout(() => { console.log(JSON.stringify({flooders, closes})); process.exit(0); }, seconds * 1000);
