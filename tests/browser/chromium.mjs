// What the browser tests share: headless Debian Chromium (through playwright-core), a page
// whose script errors and console errors are collected, a screenshot at the end, and the
// result printed as JSON on stdout — whatever went wrong in between is in `errors`.
import { chromium } from "playwright-core";

// Run `drive(page, result)` on a fresh page; `result.errors` gathers the page's errors.
export async function withPage(shot, result, drive) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  result.errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
    page.on("pageerror", (e) => result.errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") result.errors.push(m.text()); });
    await drive(page, result);
    await page.screenshot({ path: shot });
  } catch (e) {
    result.errors.push("driver: " + String(e));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
}
