// Socket.IO 4 with rooms, as its documentation shows them (the Node twin of
// bench/peers/socketio_rooms.py): players start in the lobby, `join` moves them, `say` is
// emitted to their room. Same 60 s heartbeat as every contender; no compression.
//
//     node bench/peers/node/socketio_rooms.js PORT
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const server = http.createServer();
const io = new Server(server, {
  pingInterval: 60_000,
  pingTimeout: 60_000,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  socket.data.room = "lobby";
  socket.join("lobby");
  socket.emit("welcome", { room: "lobby" });
  socket.on("join", ({ room }) => {
    socket.leave(socket.data.room);
    socket.join(room);
    socket.data.room = room;
  });
  socket.on("say", ({ text }) => {
    io.to(socket.data.room).emit("say", { from: socket.id, text });
  });
});

server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
