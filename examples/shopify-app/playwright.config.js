// End-to-end tests against the built app (`npm run build` first), in the system's Chromium
// (Debian's `chromium` package: no browser download). The server gets a fresh SQLite
// database migrated with prisma/migrations unless E2E_DATABASE_URL names one.
import { defineConfig } from "@playwright/test";

import { migratedSqlite } from "./test/helpers.js";

const PORT = Number(process.env.E2E_PORT || 3917);
const DATABASE_URL = process.env.E2E_DATABASE_URL || `file:${await migratedSqlite()}`;

export default defineConfig({
  testDir: "e2e",
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL: `http://127.0.0.1:${PORT}`,
    browserName: "chromium",
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--no-first-run"],
    },
  },
  projects: [{ name: "chromium" }],
  webServer: {
    command: "npm start",
    url: `http://127.0.0.1:${PORT}/`,
    reuseExistingServer: false,
    timeout: 30_000,
    env: { PORT: String(PORT), HOST: "127.0.0.1", DATABASE_URL, NODE_ENV: "production" },
  },
});
