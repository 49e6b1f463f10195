// Which release is serving: the deploy toolkit writes a RELEASE file into each release folder.
import { readFileSync } from "node:fs";
import path from "node:path";

export function currentRelease(cwd = process.cwd()) {
  try {
    return readFileSync(path.join(cwd, "RELEASE"), "utf8").trim() || "unreleased";
  } catch {
    return "unreleased";
  }
}
