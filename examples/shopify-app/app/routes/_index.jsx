// The public landing page, as in Shopify's template: a shop domain form that leads into the app.
import { Form, useLoaderData } from "react-router";

import { currentRelease } from "../release.server.js";

export const meta = () => [{ title: "OCC Operator Control Center" }];

export async function loader() {
  return { appName: "OCC Operator Control Center", release: currentRelease() };
}

export default function Index() {
  const { appName, release } = useLoaderData();
  return (
    <main>
      <h1>{appName}</h1>
      <p>Orders, decisions and sessions for the shops this app is installed on.</p>
      <Form method="get" action="/app">
        <label>
          <span>Shop domain</span>
          <input type="text" name="shop" placeholder="my-shop.myshopify.com" />
        </label>
        <button type="submit">Open</button>
      </Form>
      <footer>
        release <code data-testid="release">{release}</code>
      </footer>
    </main>
  );
}
