// Test helpers: a fresh SQLite database migrated with the app's own Prisma migration files.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import initSqlJs from "sql.js";

export const APP = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export function migrationSql(folder) {
  const dir = path.join(APP, folder);
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort()
    .map((name) => readFileSync(path.join(dir, name, "migration.sql"), "utf8"));
}

/** A temp folder holding `app.db`, migrated with prisma/migrations; returns the file's path. */
export async function migratedSqlite() {
  const require = createRequire(import.meta.url);
  const SQL = await initSqlJs({ wasmBinary: readFileSync(require.resolve("sql.js/dist/sql-wasm.wasm")) });
  const db = new SQL.Database();
  for (const sql of migrationSql("prisma/migrations")) db.run(sql);
  const file = path.join(mkdtempSync(path.join(tmpdir(), "occ-shopify-app-")), "app.db");
  writeFileSync(file, db.export());
  db.close();
  return file;
}

export function session(overrides = {}) {
  return {
    id: "offline_alpha.myshopify.com",
    shop: "alpha.myshopify.com",
    state: "state-1",
    isOnline: false,
    scope: "read_orders,write_orders",
    accessToken: "shpat_test_token",
    ...overrides,
  };
}
