// One session storage per server process, opened on first use from DATABASE_URL.
import { openSessionStorage } from "./sessions.server.js";

let storage;

export function sessionStorage() {
  if (!storage) {
    storage = openSessionStorage(process.env.DATABASE_URL);
    storage.catch(() => {
      storage = undefined;    // a bad URL or a missing database is retried on the next request
    });
  }
  return storage;
}
