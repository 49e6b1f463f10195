// Unit tests run without the React Router Vite plugin (it is for building the app); JSX is
// compiled by esbuild with the automatic runtime, as the plugin would.
import { defineConfig } from "vitest/config";

export default defineConfig({
  esbuild: { jsx: "automatic" },
  test: {
    include: ["test/**/*.test.{js,jsx}"],
    environment: "node",
  },
});
