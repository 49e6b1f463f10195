// `npm run build`: writes build/ with the server, the restart hook, a copy of prisma/
// and a build manifest (build.json).
//
// Reproducible on purpose: the output depends only on the sources, GIT_SHA and
// BUILT_AT (or SOURCE_DATE_EPOCH, the reproducible-builds.org convention), never on
// the clock, so the deploy tool's content-addressed artifact gets the same hash for
// the same inputs.
import { chmodSync, cpSync, mkdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const app = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(app, "build");

function builtAt() {
  if (process.env.BUILT_AT) return process.env.BUILT_AT;
  if (process.env.SOURCE_DATE_EPOCH) {
    return new Date(Number(process.env.SOURCE_DATE_EPOCH) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  }
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

const gitSha = process.env.GIT_SHA || "unknown";
if (gitSha !== "unknown" && !/^[0-9a-f]{7,64}$/.test(gitSha)) {
  console.error(`GIT_SHA=${gitSha} is not a git commit id (hex).`);
  process.exit(2);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "bin"), { recursive: true });

cpSync(join(app, "server.mjs"), join(out, "server.mjs"));
cpSync(join(app, "bin", "restart"), join(out, "bin", "restart"));
chmodSync(join(out, "bin", "restart"), 0o755);
cpSync(join(app, "prisma"), join(out, "prisma"), { recursive: true });
for (const name of ["package.json", "shopify.app.toml", "shopify.app.staging.toml"]) {
  if (existsSync(join(app, name))) cpSync(join(app, name), join(out, name));
}

const manifest = { name: "occ-example-app", git_sha: gitSha, built_at: builtAt() };
writeFileSync(join(out, "build.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`built ${gitSha} into ${out}`);
