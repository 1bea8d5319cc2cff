// Lighthouse on one page, for tests/tests/page_served.rs: writes the JSON
// report, then exits at once. The CLI, once its report is written, still
// waits about 3 s on a timer of its own before it exits; nothing the test
// reads comes in that time.
//
//   node tests/lighthouse/audit.mjs TOOLS URL REPORT
//
// TOOLS is the folder where scripts/setup --browser installed Lighthouse
// (.tools); Chromium is CHROME_PATH's.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [tools, url, report] = process.argv.slice(2);
if (!report) {
  console.error('uso: node audit.mjs TOOLS URL REPORT');
  process.exit(2);
}
const from = (path) => import(pathToFileURL(join(tools, 'node_modules', path)).href);
const { default: lighthouse } = await from('lighthouse/core/index.js');
const { launch } = await from('chrome-launcher/dist/index.js');

// As root, headless, and off this machine's closed network. chrome-launcher
// makes its own profile: a --user-data-dir here would keep it from connecting.
const chrome = await launch({
  chromeFlags: [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let status = 0;
try {
  const result = await lighthouse(url, {
    port: chrome.port,
    output: 'json',
    logLevel: 'error',
    onlyCategories: ['performance', 'accessibility', 'best-practices', 'seo'],
    // A picture for the HTML report, in no category's score.
    disableFullPageScreenshot: true,
  });
  await writeFile(report, result.report);
} catch (error) {
  console.error(error);
  status = 1;
} finally {
  await chrome.kill();
}
process.exit(status);
