// Preloaded (`node --import ./loopback.mjs ...`) into MCP servers the tests run: every server
// the process starts listens on 127.0.0.1 only (the tests' rule; the reference server would
// otherwise bind every interface), and its real port is printed to stderr as
// `shardgate-e2e listening <port>` (the server is given PORT=0 and would print 0).
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || typeof args[0] === "string") {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (args[0] && typeof args[0] === "object" && args[0].path === undefined) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") console.error(`shardgate-e2e listening ${address.port}`);
  });
  return listen.apply(this, args);
};
