// The example app's web server: Node's standard library only, so it runs offline.
//
// GET /healthz  -> 200 {"ok": true}
// GET /version  -> 200 {"release", "sha", "built_at"}
//
// `release` comes from the file RELEASE in the working directory (the release folder the
// deploy toolkit starts the app in, one id per deployment); `sha` and `built_at` come
// from the build manifest (build.json) that `npm run build` writes beside this file. Both are read once at
// start-up: a running server keeps answering for the release it was started from,
// which is what a smoke check after a switch must be able to tell apart.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function readText(name, dir = here) {
  try {
    return readFileSync(join(dir, name), "utf8").trim();
  } catch {
    return null;
  }
}

function readJson(name) {
  const text = readText(name);
  if (text === null) return {};
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

const manifest = readJson("build.json");
const version = {
  release: readText("RELEASE", process.cwd()) || "unreleased",
  sha: manifest.git_sha || "unknown",
  built_at: manifest.built_at || null,
};

const host = process.env.HOST || "127.0.0.1";
const port = Number.parseInt(process.env.PORT || "3000", 10);

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(text);
}

const server = createServer((req, res) => {
  const path = (req.url || "/").split("?")[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    send(res, 405, { error: "method not allowed" });
  } else if (path === "/healthz") {
    send(res, 200, { ok: true });
  } else if (path === "/version") {
    send(res, 200, version);
  } else if (path === "/") {
    send(res, 200, { app: "occ-example-app", ...version });
  } else {
    send(res, 404, { error: "not found", path });
  }
});

server.on("error", (err) => {
  console.error(`cannot listen on ${host}:${port}: ${err.code || err.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`occ-example-app ${version.release} (${version.sha}) listening on http://${addr.address}:${addr.port}`);
});

// Stop accepting, let in-flight requests finish, then exit: a restart hook's SIGTERM
// should not cut a smoke check off mid-response.
function shutdown(signal) {
  console.log(`received ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeIdleConnections?.();
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
