// Open an ember speedscope file in speedscope's own app (the `speedscope` npm package's
// release build, from file://) in headless Chromium through its file picker, and report as
// JSON on stdout what the app shows: errors, its toolbar, and its sandwich (table) view.
//
//   node speedscope.mjs FILE.speedscope.json SCREENSHOT.png
import { fileURLToPath } from "node:url";
import path from "node:path";
import { withPage } from "./chromium.mjs";

const [file, shot] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const app = path.join(here, "node_modules/speedscope/dist/release/index.html");
await withPage(shot, {}, async (page, result) => {
  // As a person would: the app's own file picker.
  await page.goto(`file://${app}`);
  await page.setInputFiles("input[type=file]", file);
  // Loaded: the toolbar shows the profile's name.
  await page.waitForFunction(() => document.body.innerText.includes("Time Order"), null, { timeout: 30000 });
  await page.waitForTimeout(1000);
  result.toolbar = await page.evaluate(() => document.body.innerText.slice(0, 400));
  // The sandwich view lists every function in a table.
  await page.keyboard.press("3");
  await page.waitForTimeout(1000);
  result.sandwich = await page.evaluate(() => document.body.innerText);
});
