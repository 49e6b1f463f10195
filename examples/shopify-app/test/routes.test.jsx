import { renderToString } from "react-dom/server";
import { StaticRouterProvider, createStaticHandler, createStaticRouter } from "react-router";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { openSessionStorage } from "../app/sessions.server.js";
import { migratedSqlite, session } from "./helpers.js";

let file;

beforeAll(async () => {
  file = await migratedSqlite();
  const storage = await openSessionStorage(`file:${file}`);
  await storage.storeSession(session({ expires: new Date("2026-05-01T00:00:00Z") }));
  await storage.storeSession(session({ id: "online_alpha_3", isOnline: true }));
  await storage.storeSession(session({ id: "offline_beta.myshopify.com", shop: "beta.myshopify.com" }));
  process.env.DATABASE_URL = `file:${file}`;
});

afterEach(() => {
  process.env.DATABASE_URL = `file:${file}`;
});

const request = (path) => new Request(`http://localhost${path}`);

describe("the landing page (/)", () => {
  it("names the app and the release serving it", async () => {
    const { loader } = await import("../app/routes/_index.jsx");
    expect(await loader({ request: request("/") })).toEqual({ appName: "OCC Operator Control Center", release: "unreleased" });
  });

  it("renders its shop form into the app", async () => {
    const { default: Index } = await import("../app/routes/_index.jsx");
    const handler = createStaticHandler([{ path: "/", Component: Index, loader: () => ({ appName: "OCC", release: "r1" }) }]);
    const context = await handler.query(request("/"));
    const html = renderToString(
      <StaticRouterProvider router={createStaticRouter(handler.dataRoutes, context)} context={context} />,
    );
    expect(html).toContain("<h1>OCC</h1>");
    expect(html).toContain('action="/app"');
    expect(html).toContain(">r1</code>");
  });
});

describe("the app page (/app)", () => {
  it("lists a shop's sessions without their tokens", async () => {
    const { loader } = await import("../app/routes/app.jsx");
    const got = await loader({ request: request("/app?shop=alpha.myshopify.com") });
    expect(got).toEqual({
      shop: "alpha.myshopify.com",
      total: 2,
      sessions: [
        { id: "offline_alpha.myshopify.com", isOnline: false, scope: "read_orders,write_orders", expires: "2026-05-01T00:00:00.000Z" },
        { id: "online_alpha_3", isOnline: true, scope: "read_orders,write_orders", expires: null },
      ],
    });
    expect(JSON.stringify(got)).not.toContain("shpat_");
  });

  it("counts every stored session when no shop is named", async () => {
    const { loader } = await import("../app/routes/app.jsx");
    expect(await loader({ request: request("/app") })).toMatchObject({ shop: null, total: 3 });
  });

  it("answers 400 for something that is not a shop domain", async () => {
    const { loader } = await import("../app/routes/app.jsx");
    const thrown = await loader({ request: request("/app?shop=evil.example.com") }).catch((e) => e);
    expect(thrown.init.status).toBe(400);
    expect(thrown.data).toMatch(/not a shop domain/);
  });

  it("renders the sessions table", async () => {
    const { default: ShopSessions, loader } = await import("../app/routes/app.jsx");
    const handler = createStaticHandler([{ path: "/app", Component: ShopSessions, loader }]);
    const context = await handler.query(request("/app?shop=alpha.myshopify.com"));
    const html = renderToString(
      <StaticRouterProvider router={createStaticRouter(handler.dataRoutes, context)} context={context} />,
    );
    expect(html).toContain("<h1>alpha.myshopify.com</h1>");
    expect(html).toContain("<td>online_alpha_3</td>");
  });
});

describe("the route config", () => {
  it("has the landing page at / and the app at /app", async () => {
    const { default: routes } = await import("../app/routes.js");
    expect(routes.map((r) => [r.index ?? false, r.path, r.file])).toEqual([
      [true, undefined, "routes/_index.jsx"],
      [false, "app", "routes/app.jsx"],
    ]);
  });
});
