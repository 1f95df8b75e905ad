// Load an ember flamegraph SVG in headless Chromium from file://, click a frame to zoom, run a
// search for a function, and report what the page did as JSON on stdout.
//
//   node flamegraph.mjs FILE.svg SEARCH SCREENSHOT.png
import { withPage } from "./chromium.mjs";

const [svg, term, shot] = process.argv.slice(2);
await withPage(shot, { dialogs: [] }, async (page, result) => {
  // inferno asks for the search term with prompt(); answer it. Any other dialog (alert()
  // from a hostile name) is recorded.
  page.on("dialog", async (d) => {
    result.dialogs.push(d.type() + ": " + d.message());
    if (d.type() === "prompt") await d.accept(term); else await d.dismiss();
  });
  await page.goto("file://" + svg);
  await page.waitForSelector("#frames");
  result.frames = await page.locator("#frames > g").count();
  // Search: the button prompts for a term, highlights matches and prints "Matched: N%".
  await page.locator("#search").click();
  await page.waitForTimeout(300);
  result.matched = await page.evaluate(() => document.getElementById("matched")?.textContent ?? "");
  result.highlighted = await page.evaluate(
    (c) => [...document.querySelectorAll("#frames rect")].filter((r) => r.getAttribute("fill") === c).length,
    "rgb(230,0,230)",
  );
  // Click the widest frame whose title starts with the search term: zoom into it.
  const target = page.locator("#frames > g", { has: page.locator(`title:text-matches("^${term}", "")`) }).first();
  result.found = (await target.count()) > 0;
  if (result.found) {
    // The frame's label may cover its rectangle; a click on either reaches the frame.
    await target.locator("rect").click({ force: true });
    result.unzoomVisible = await page.evaluate(() => !document.getElementById("unzoom").classList.contains("hide"));
  }
});
