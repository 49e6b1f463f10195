import { expect, test } from "@playwright/test";

test("the landing page answers and names the app", async ({ page }) => {
  const response = await page.goto("/");
  expect(response.status()).toBe(200);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("OCC Operator Control Center");
  await expect(page.getByTestId("release")).toHaveText(/.+/);
});

test("the shop form leads to the shop's sessions", async ({ page }) => {
  await page.goto("/");
  await page.getByPlaceholder("my-shop.myshopify.com").fill("alpha.myshopify.com");
  await page.getByRole("button", { name: "Open" }).click();
  await expect(page).toHaveURL(/\/app\?shop=alpha\.myshopify\.com$/);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("alpha.myshopify.com");
  await expect(page.getByTestId("total")).toHaveText("0 sessions");
});

test("a bad shop domain is a 400 page, not a crash", async ({ page }) => {
  const response = await page.goto("/app?shop=evil.example.com");
  expect(response.status()).toBe(400);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("400 Bad Request");
});
