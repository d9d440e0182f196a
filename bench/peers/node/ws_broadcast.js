// The plain Node.js pattern with the `ws` library: every frame a client sends goes to every
// client, as in ws's own README ("broadcast to all connected clients"), with its documented
// heartbeat (a ping every 60 s, like every contender here) and no compression (ws's default).
//
//     node bench/peers/node/ws_broadcast.js PORT
"use strict";

const http = require("node:http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2]);
const server = http.createServer((request, response) => {
  response.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: "/ws" });

wss.on("connection", (socket) => {
  socket.isAlive = true;
  socket.on("pong", () => {
    socket.isAlive = true;
  });
  socket.send('{"type":"event","event":"welcome"}');
  socket.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});

const heartbeat = setInterval(() => {
  for (const socket of wss.clients) {
    if (!socket.isAlive) {
      socket.terminate();
      continue;
    }
    socket.isAlive = false;
    socket.ping();
  }
}, 60_000);
wss.on("close", () => clearInterval(heartbeat));

server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
