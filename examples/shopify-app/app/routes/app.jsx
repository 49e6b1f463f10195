// The app's page for one shop: its stored Shopify sessions (the Prisma `Session` table).
import { data, useLoaderData } from "react-router";

import { sessionStorage } from "../db.server.js";

const SHOP = /^[a-z0-9][a-z0-9-]*\.myshopify\.com$/;

export const meta = ({ data: d }) => [{ title: d?.shop ? `${d.shop} · OCC` : "OCC" }];

export async function loader({ request }) {
  const shop = new URL(request.url).searchParams.get("shop");
  const storage = await sessionStorage();
  if (shop === null) {
    return { shop: null, total: await storage.countSessions(), sessions: [] };
  }
  if (!SHOP.test(shop)) {
    throw data(`"${shop}" is not a shop domain (expected <name>.myshopify.com).`, { status: 400, statusText: "Bad Request" });
  }
  const sessions = await storage.findSessionsByShop(shop);
  return {
    shop,
    total: sessions.length,
    // Never the tokens: only what an operator needs to see.
    sessions: sessions.map((s) => ({
      id: s.id,
      isOnline: s.isOnline,
      scope: s.scope ?? "",
      expires: s.expires ? s.expires.toISOString() : null,
    })),
  };
}

export default function ShopSessions() {
  const { shop, total, sessions } = useLoaderData();
  if (!shop) {
    return (
      <main>
        <h1>Sessions</h1>
        <p data-testid="total">{total} stored sessions</p>
      </main>
    );
  }
  return (
    <main>
      <h1>{shop}</h1>
      <p data-testid="total">{total} sessions</p>
      <table>
        <thead>
          <tr><th>id</th><th>online</th><th>scope</th><th>expires</th></tr>
        </thead>
        <tbody>
          {sessions.map((s) => (
            <tr key={s.id}>
              <td>{s.id}</td>
              <td>{s.isOnline ? "yes" : "no"}</td>
              <td>{s.scope}</td>
              <td>{s.expires ?? "never"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}
