// `npm test`: starts the server from the source tree on a free port and checks both routes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { createServer } from "node:net";

const app = join(dirname(fileURLToPath(import.meta.url)), "..");

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

test("healthz and version answer", async (t) => {
  const port = await freePort();
  const child = spawn(process.execPath, [join(app, "server.mjs")], {
    env: { ...process.env, HOST: "127.0.0.1", PORT: String(port) },
    stdio: "ignore",
  });
  t.after(() => child.kill());
  const base = `http://127.0.0.1:${port}`;
  let health;
  for (let i = 0; i < 100 && !health; i++) {
    try {
      health = await fetch(`${base}/healthz`);
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { ok: true });
  const version = await (await fetch(`${base}/version`)).json();
  assert.equal(version.release, "unreleased");
  assert.ok("sha" in version && "built_at" in version);
});
