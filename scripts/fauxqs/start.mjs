// Starts fauxqs (the local SQS) on 127.0.0.1 only, without request logs, and stops it on
// SIGINT/SIGTERM. Run by scripts/lib.sh (start_fauxqs) with the Node.js installed beside
// fauxqs:
//   FAUXQS_MODULE  path of fauxqs's dist/app.js
//   FAUXQS_PORT    the port
//   FAUXQS_DATA_DIR  optional: keep queues and messages on disk there (SQLite) across restarts
import net from "node:net";
import { pathToFileURL } from "node:url";

// fauxqs binds every interface; this project binds nothing beyond the loopback.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const options = args[0];
  if (options && typeof options === "object" && ["0.0.0.0", "::", undefined].includes(options.host)) {
    args[0] = { ...options, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};

const { startFauxqs } = await import(pathToFileURL(process.env.FAUXQS_MODULE).href);
const server = await startFauxqs({
  port: Number(process.env.FAUXQS_PORT),
  logger: false,
  dataDir: process.env.FAUXQS_DATA_DIR || undefined,
});
console.log(`fauxqs listening on ${server.address}`);

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    await server.stop();
    process.exit(0);
  });
}
