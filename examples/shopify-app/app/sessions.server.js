// Shopify session storage over the Prisma-migrated `Session` table (prisma/schema.prisma).
//
// Prisma Client cannot be generated on machines without access to Prisma's binary host, so
// the app reads and writes the table through plain drivers instead: `pg` for a
// postgres:// DATABASE_URL, and sql.js (SQLite compiled to WebAssembly, no native build)
// for a Prisma-style `file:` URL. The schema itself stays under Prisma Migrate; the values
// are stored the way Prisma stores them (SQLite: DateTime as epoch milliseconds, Boolean
// as 0/1; Postgres: TIMESTAMP(3) in UTC), so Prisma Client could read these rows too.
//
// The methods follow @shopify/shopify-app-session-storage's interface: storeSession,
// loadSession, deleteSession, deleteSessions, findSessionsByShop.

import { randomBytes } from "node:crypto";
import { readFile, rename, unlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

export const COLUMNS = [
  "id", "shop", "state", "isOnline", "scope", "expires", "accessToken", "userId", "firstName",
  "lastName", "email", "accountOwner", "locale", "collaborator", "emailVerified",
  "refreshToken", "refreshTokenExpires",
];
const BOOLEANS = new Set(["isOnline", "accountOwner", "collaborator", "emailVerified"]);
const DATES = new Set(["expires", "refreshTokenExpires"]);
const REQUIRED = ["id", "shop", "state", "accessToken"];

/** Which driver a DATABASE_URL needs: {driver: "sqlite", path} or {driver: "postgres", url, schema}.
 *  Relative `file:` paths resolve against `<cwd>/prisma`, the folder of schema.prisma, as Prisma does. */
export function resolveDatabaseUrl(url, { cwd = process.cwd() } = {}) {
  if (!url) {
    throw new Error("DATABASE_URL is not set: the app needs its session database (file:... or postgres://...).");
  }
  if (url.startsWith("file:")) {
    let file = url.slice("file:".length).split("?")[0];
    if (file.startsWith("//")) file = new URL(url).pathname;     // file:///abs/path
    if (!file) throw new Error("DATABASE_URL is file: without a path.");
    return { driver: "sqlite", path: path.resolve(cwd, "prisma", file) };
  }
  if (/^postgres(ql)?:\/\//.test(url)) {
    // `schema` is Prisma's parameter, not libpq's: it becomes the search_path here.
    const parsed = new URL(url);
    const schema = parsed.searchParams.get("schema") || "public";
    for (const prismaOnly of ["schema", "pgbouncer", "connection_limit", "pool_timeout", "connect_timeout"]) {
      parsed.searchParams.delete(prismaOnly);
    }
    return { driver: "postgres", url: parsed.toString(), schema };
  }
  const scheme = url.split(":")[0];
  throw new Error(`DATABASE_URL has the scheme "${scheme}:"; this app reads sessions from file: (SQLite) or postgres:// URLs.`);
}

/** A session storage for `url` (see resolveDatabaseUrl). Call close() when done. */
export async function openSessionStorage(url, options = {}) {
  const target = resolveDatabaseUrl(url, options);
  if (target.driver === "sqlite") return SqliteSessionStorage.open(target.path);
  return PostgresSessionStorage.open(target.url, target.schema);
}

function checkSession(session) {
  const missing = REQUIRED.filter((k) => session?.[k] === undefined || session?.[k] === null || session?.[k] === "");
  if (missing.length) throw new Error(`A session needs ${missing.join(", ")}.`);
}

function toRow(session) {
  return COLUMNS.map((c) => {
    const v = session[c];
    if (v === undefined || v === null) {
      return BOOLEANS.has(c) && c !== "collaborator" && c !== "emailVerified" ? false : null;
    }
    if (DATES.has(c)) return v instanceof Date ? v : new Date(v);
    if (BOOLEANS.has(c)) return Boolean(v);
    return v;
  });
}

function fromRow(row) {
  const s = {};
  for (const c of COLUMNS) {
    const v = row[c];
    if (v === null || v === undefined) s[c] = c === "collaborator" || c === "emailVerified" ? false : undefined;
    else if (DATES.has(c)) s[c] = v instanceof Date ? v : new Date(Number(v));
    else if (BOOLEANS.has(c)) s[c] = Boolean(v);
    else if (c === "userId") s[c] = Number(v);
    else s[c] = v;
  }
  return s;
}

const quoted = COLUMNS.map((c) => `"${c}"`).join(", ");
const updates = COLUMNS.filter((c) => c !== "id").map((c) => `"${c}" = excluded."${c}"`).join(", ");

// ------------------------------------------------------------------------------ SQLite

let sqlJs;
async function loadSqlJs() {
  if (!sqlJs) {
    const require = createRequire(import.meta.url);
    const { default: initSqlJs } = await import("sql.js");
    const wasm = await readFile(require.resolve("sql.js/dist/sql-wasm.wasm"));
    sqlJs = await initSqlJs({ wasmBinary: wasm });
  }
  return sqlJs;
}

export class SqliteSessionStorage {
  static async open(file) {
    return new SqliteSessionStorage(file, await loadSqlJs());
  }

  constructor(file, SQL) {
    this.file = file;
    this.SQL = SQL;
    this.queue = Promise.resolve();
  }

  // The database file is read for every call, so rows written by other processes (and
  // migrations applied by the deploy) are seen; writes go to a temporary file that
  // replaces the database in one rename, and are queued so two requests never race.
  #use(write, fn) {
    const run = async () => {
      let bytes;
      try {
        bytes = await readFile(this.file);
      } catch (e) {
        if (e.code === "ENOENT") {
          throw new Error(`No SQLite database at ${this.file}: run the Prisma migrations first.`);
        }
        throw e;
      }
      const db = new this.SQL.Database(bytes);
      try {
        const result = fn(db);
        if (write) {
          const tmp = `${this.file}.${randomBytes(6).toString("hex")}.tmp`;
          try {
            await writeFile(tmp, db.export(), { mode: 0o600 });
            await rename(tmp, this.file);
          } catch (e) {
            await unlink(tmp).catch(() => {});
            throw e;
          }
        }
        return result;
      } finally {
        db.close();
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => {});
    return next;
  }

  #all(db, sql, params = []) {
    const stmt = db.prepare(sql);
    try {
      stmt.bind(params);
      const rows = [];
      while (stmt.step()) rows.push(stmt.getAsObject());
      return rows;
    } finally {
      stmt.free();
    }
  }

  async storeSession(session) {
    checkSession(session);
    const values = toRow(session).map((v) => (v instanceof Date ? v.getTime() : typeof v === "boolean" ? Number(v) : v));
    await this.#use(true, (db) => {
      db.run(
        `INSERT INTO "Session" (${quoted}) VALUES (${COLUMNS.map(() => "?").join(", ")}) ` +
          `ON CONFLICT("id") DO UPDATE SET ${updates}`,
        values,
      );
    });
    return true;
  }

  async loadSession(id) {
    const rows = await this.#use(false, (db) => this.#all(db, `SELECT ${quoted} FROM "Session" WHERE "id" = ?`, [id]));
    return rows.length ? fromRow(rows[0]) : undefined;
  }

  async deleteSession(id) {
    return this.deleteSessions([id]);
  }

  async deleteSessions(ids) {
    if (!ids.length) return true;
    await this.#use(true, (db) => {
      db.run(`DELETE FROM "Session" WHERE "id" IN (${ids.map(() => "?").join(", ")})`, ids);
    });
    return true;
  }

  async findSessionsByShop(shop) {
    const rows = await this.#use(false, (db) =>
      this.#all(db, `SELECT ${quoted} FROM "Session" WHERE "shop" = ? ORDER BY "id"`, [shop]));
    return rows.map(fromRow);
  }

  async countSessions() {
    const rows = await this.#use(false, (db) => this.#all(db, `SELECT COUNT(*) AS n FROM "Session"`));
    return Number(rows[0].n);
  }

  async close() {
    await this.queue;
  }
}

// ------------------------------------------------------------------------------ Postgres

const TIMESTAMP_WITHOUT_TZ = 1114;

export class PostgresSessionStorage {
  static async open(url, schema = "public") {
    const { default: pg } = await import("pg");
    // Prisma writes DateTime into TIMESTAMP(3) as UTC; pg would read it as local time.
    const types = {
      getTypeParser: (oid, format) =>
        oid === TIMESTAMP_WITHOUT_TZ ? (s) => new Date(`${s.replace(" ", "T")}Z`) : pg.types.getTypeParser(oid, format),
    };
    const pool = new pg.Pool({ connectionString: url, types, max: 5, options: `-c search_path="${schema}"` });
    return new PostgresSessionStorage(pool);
  }

  constructor(pool) {
    this.pool = pool;
  }

  async storeSession(session) {
    checkSession(session);
    const values = toRow(session).map((v) => (v instanceof Date ? v.toISOString() : v));
    await this.pool.query(
      `INSERT INTO "Session" (${quoted}) VALUES (${COLUMNS.map((_, i) => `$${i + 1}`).join(", ")}) ` +
        `ON CONFLICT ("id") DO UPDATE SET ${updates}`,
      values,
    );
    return true;
  }

  async loadSession(id) {
    const { rows } = await this.pool.query(`SELECT ${quoted} FROM "Session" WHERE "id" = $1`, [id]);
    return rows.length ? fromRow(rows[0]) : undefined;
  }

  async deleteSession(id) {
    return this.deleteSessions([id]);
  }

  async deleteSessions(ids) {
    if (!ids.length) return true;
    await this.pool.query(`DELETE FROM "Session" WHERE "id" = ANY($1::text[])`, [ids]);
    return true;
  }

  async findSessionsByShop(shop) {
    const { rows } = await this.pool.query(`SELECT ${quoted} FROM "Session" WHERE "shop" = $1 ORDER BY "id"`, [shop]);
    return rows.map(fromRow);
  }

  async countSessions() {
    const { rows } = await this.pool.query(`SELECT COUNT(*) AS n FROM "Session"`);
    return Number(rows[0].n);
  }

  async close() {
    await this.pool.end();
  }
}
