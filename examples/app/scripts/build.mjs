// `npm run build`: writes build/ with the server and a build manifest (build.json).
// The deploy toolkit packs the whole app tree with it (package.json, prisma/, ...), and
// starts the release with the package's start script (`node build/server.mjs`).
//
// Reproducible on purpose: the output depends only on the sources, GIT_SHA and
// BUILT_AT (or SOURCE_DATE_EPOCH, the reproducible-builds.org convention), never on
// the clock, so the deploy tool's content-addressed artifact gets the same hash for
// the same inputs.
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
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
mkdirSync(out, { recursive: true });

cpSync(join(app, "server.mjs"), join(out, "server.mjs"));

const manifest = { name: "occ-example-app", git_sha: gitSha, built_at: builtAt() };
writeFileSync(join(out, "build.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`built ${gitSha} into ${out}`);
