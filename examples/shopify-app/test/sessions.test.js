import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

import initSqlJs from "sql.js";
import { afterAll, beforeEach, describe, expect, it } from "vitest";

import { COLUMNS, openSessionStorage, resolveDatabaseUrl } from "../app/sessions.server.js";
import { APP, migratedSqlite, migrationSql, session } from "./helpers.js";

describe("resolveDatabaseUrl", () => {
  it.each([
    ["file:dev.sqlite", "/srv/app/prisma/dev.sqlite"],
    ["file:./dev.sqlite", "/srv/app/prisma/dev.sqlite"],
    ["file:../../data/app.db", "/srv/data/app.db"],
    ["file:/var/lib/app.db", "/var/lib/app.db"],
    ["file:/var/lib/app.db?connection_limit=1", "/var/lib/app.db"],
    ["file:///var/lib/app.db", "/var/lib/app.db"],
  ])("%s is SQLite at %s (relative to prisma/, as Prisma resolves it)", (url, file) => {
    expect(resolveDatabaseUrl(url, { cwd: "/srv/app" })).toEqual({ driver: "sqlite", path: file });
  });

  it("postgres URLs go to pg, with Prisma's schema parameter turned into the search path", () => {
    const got = resolveDatabaseUrl("postgresql://u:p@db:5432/occ?schema=shop&pgbouncer=true&sslmode=require");
    expect(got).toEqual({ driver: "postgres", url: "postgresql://u:p@db:5432/occ?sslmode=require", schema: "shop" });
    expect(resolveDatabaseUrl("postgres://db/occ").schema).toBe("public");
  });

  it.each([
    [undefined, /DATABASE_URL is not set/],
    ["", /DATABASE_URL is not set/],
    ["mysql://db/occ", /scheme "mysql:"/],
    ["file:", /without a path/],
  ])("%s is refused with a reason", (url, message) => {
    expect(() => resolveDatabaseUrl(url)).toThrow(message);
  });
});

describe("the Prisma migrations", () => {
  it("create the same Session columns for SQLite and Postgres, in the schema's order", () => {
    for (const folder of ["prisma/migrations", "prisma/postgres/migrations"]) {
      const sql = migrationSql(folder).join("\n");
      const columns = [...sql.matchAll(/^\s+"(\w+)" [A-Z]/gm)].map((m) => m[1]);
      expect(columns).toEqual(COLUMNS);
    }
    const schema = readFileSync(path.join(APP, "prisma/schema.prisma"), "utf8");
    const model = schema.slice(schema.indexOf("model Session"));
    expect([...model.matchAll(/^\s+(\w+)\s+\w+/gm)].map((m) => m[1])).toEqual(COLUMNS);
  });

  it("declare their providers in migration_lock.toml", () => {
    const provider = (folder) =>
      readFileSync(path.join(APP, folder, "migration_lock.toml"), "utf8").match(/^provider = "(\w+)"$/m)[1];
    expect(provider("prisma/migrations")).toBe("sqlite");
    expect(provider("prisma/postgres/migrations")).toBe("postgresql");
  });
});

describe("SQLite session storage (sql.js, a real database file)", () => {
  let file;
  let storage;

  beforeEach(async () => {
    file = await migratedSqlite();
    storage = await openSessionStorage(`file:${file}`);
  });

  afterAll(async () => {
    await storage?.close();
  });

  it("stores and loads a session with every field typed as Prisma types it", async () => {
    const expires = new Date("2026-03-01T10:20:30.456Z");
    await storage.storeSession(session({ expires, isOnline: true, userId: 42, email: "op@example.com", accountOwner: true }));
    const got = await storage.loadSession("offline_alpha.myshopify.com");
    expect(got).toMatchObject({
      shop: "alpha.myshopify.com", isOnline: true, expires, userId: 42, email: "op@example.com",
      accountOwner: true, collaborator: false, emailVerified: false, refreshToken: undefined,
    });
  });

  it("writes the row the way Prisma would: DateTime as epoch milliseconds, Boolean as 0/1", async () => {
    await storage.storeSession(session({ expires: new Date(1767225600000), isOnline: true }));
    const SQL = await initSqlJs();
    const db = new SQL.Database(readFileSync(file));
    const [{ values }] = db.exec(`SELECT "expires", "isOnline", "accountOwner" FROM "Session"`);
    db.close();
    expect(values).toEqual([[1767225600000, 1, 0]]);
  });

  it("updates a stored session in place (same id)", async () => {
    await storage.storeSession(session());
    await storage.storeSession(session({ scope: "read_products", state: "state-2" }));
    expect(await storage.countSessions()).toBe(1);
    expect((await storage.loadSession("offline_alpha.myshopify.com")).scope).toBe("read_products");
  });

  it("finds a shop's sessions and deletes them", async () => {
    await storage.storeSession(session());
    await storage.storeSession(session({ id: "online_alpha_7", isOnline: true }));
    await storage.storeSession(session({ id: "offline_beta.myshopify.com", shop: "beta.myshopify.com" }));
    expect((await storage.findSessionsByShop("alpha.myshopify.com")).map((s) => s.id))
      .toEqual(["offline_alpha.myshopify.com", "online_alpha_7"]);
    await storage.deleteSessions(["offline_alpha.myshopify.com", "online_alpha_7"]);
    await storage.deleteSession("offline_beta.myshopify.com");
    expect(await storage.countSessions()).toBe(0);
    expect(await storage.loadSession("online_alpha_7")).toBeUndefined();
  });

  it("keeps every write when requests write at the same time", async () => {
    await Promise.all(Array.from({ length: 12 }, (_, i) => storage.storeSession(session({ id: `s${i}` }))));
    expect(await storage.countSessions()).toBe(12);
  });

  it("sees rows another process wrote to the same file", async () => {
    const SQL = await initSqlJs();
    const db = new SQL.Database(readFileSync(file));
    db.run(`INSERT INTO "Session" ("id","shop","state","accessToken") VALUES ('x','gamma.myshopify.com','s','t')`);
    writeFileSync(file, db.export());
    db.close();
    expect((await storage.findSessionsByShop("gamma.myshopify.com")).length).toBe(1);
  });

  it("refuses a session without its required fields", async () => {
    await expect(storage.storeSession({ id: "x", shop: "a.myshopify.com" })).rejects.toThrow(/needs state, accessToken/);
  });

  it("says to run the migrations when the database file does not exist", async () => {
    const missing = await openSessionStorage(`file:${file}.missing`);
    await expect(missing.countSessions()).rejects.toThrow(/No SQLite database at .*run the Prisma migrations/);
  });

  it("fails on a database the migrations never ran on", async () => {
    const SQL = await initSqlJs();
    writeFileSync(file, new SQL.Database().export());
    await expect(storage.countSessions()).rejects.toThrow(/no such table: Session/);
  });
});

// Against a real Postgres when the test run names one (the toolkit's pytest passes its
// throwaway cluster's URL here); the schema is migrated from prisma/postgres/migrations.
const PG_URL = process.env.TEST_POSTGRES_URL;

describe.skipIf(!PG_URL)("Postgres session storage (pg, a real server)", () => {
  let storage;

  beforeEach(async () => {
    const { default: pg } = await import("pg");
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP TABLE IF EXISTS "Session"`);
    for (const sql of migrationSql("prisma/postgres/migrations")) await client.query(sql);
    await client.end();
    storage ??= await openSessionStorage(PG_URL);
  });

  afterAll(async () => {
    await storage?.close();
  });

  it("stores, finds, updates and deletes sessions", async () => {
    const expires = new Date("2026-03-01T10:20:30.456Z");
    await storage.storeSession(session({ expires, userId: 9007199254740991 }));
    await storage.storeSession(session({ id: "online_alpha_1", isOnline: true }));
    await storage.storeSession(session({ id: "online_alpha_1", isOnline: true, scope: "read_products" }));
    const found = await storage.findSessionsByShop("alpha.myshopify.com");
    expect(found.map((s) => [s.id, s.isOnline, s.scope])).toEqual([
      ["offline_alpha.myshopify.com", false, "read_orders,write_orders"],
      ["online_alpha_1", true, "read_products"],
    ]);
    expect(found[0].expires).toEqual(expires);
    expect(found[0].userId).toBe(9007199254740991);
    await storage.deleteSessions(["online_alpha_1"]);
    expect(await storage.countSessions()).toBe(1);
  });

  it("reads TIMESTAMP(3) as UTC, as Prisma writes it", async () => {
    const { default: pg } = await import("pg");
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`INSERT INTO "Session" ("id","shop","state","accessToken","expires")
                        VALUES ('p','alpha.myshopify.com','s','t','2026-01-02 03:04:05.678')`);
    await client.end();
    expect((await storage.loadSession("p")).expires.toISOString()).toBe("2026-01-02T03:04:05.678Z");
  });
});
