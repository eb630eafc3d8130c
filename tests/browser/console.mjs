// The console in a real browser (Debian's chromium, driven by playwright-core), against the
// real hookrelay binary the Rust test started. Run by tests/it/console.rs; every check that
// fails throws, and the exit code says so.
//
// Environment: CONSOLE (http://127.0.0.1:PORT, the API listener), HOOK (the /hooks/gitlab
// URL), SECRET (the source's token), ADMIN_TOKEN, READ_TOKEN, SINK_PORT (this script runs the
// destination there), HOOKRELAY_BIN, SHOTS (a folder for screenshots).
import { chromium } from "playwright-core";
import http from "node:http";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const CONSOLE = env("CONSOLE");
const HOOK = env("HOOK");
const SECRET = env("SECRET");
const ADMIN = env("ADMIN_TOKEN");
const READ = env("READ_TOKEN");
const SINK_PORT = Number(env("SINK_PORT"));
const BIN = env("HOOKRELAY_BIN");
const SHOTS = env("SHOTS");
fs.mkdirSync(SHOTS, { recursive: true });

const HOSTILE = `<script>alert("body")</script><img src=x onerror=alert(1)><svg onload=alert(2)></textarea></pre><a href="javascript:alert(3)">x</a><div hx-get="/ui/logout" hx-trigger="load">\u202Eevil`;
const HOSTILE_HEADER = `'; touch /tmp/hookrelay-pwned; echo '$(id)`;

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

// The destination: failing (503 with a hostile answer) until healed.
let sinkFails = true;
let sinkHits = 0;
const sink = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    sinkHits++;
    if (sinkFails) {
      res.writeHead(503, { "content-type": "text/html" });
      res.end(`<script>alert("response")</script> down for maintenance`);
    } else {
      res.writeHead(200);
      res.end("ok");
    }
  });
});
await new Promise((resolve) => sink.listen(SINK_PORT, "127.0.0.1", resolve));

// Another origin (same site: another port) trying to make the signed-in browser act.
const evil = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html" });
  res.end(`<!doctype html><title>evil</title><form id=f method=post action="${CONSOLE}/ui/destinations/sink/pause"><input name=form_token value=guess></form><script>document.getElementById("f").submit()</script>`);
});
await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
const EVIL = `http://127.0.0.1:${evil.address().port}`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

const violations = [];
const dialogs = [];
async function context(options = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  await ctx.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  ctx.on("page", watch);
  return ctx;
}
function watch(page) {
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });
  page.on("console", (msg) => { if (/Content.Security.Policy|Refused to/i.test(msg.text())) violations.push(msg.text()); });
}
async function cspClean(page, where) {
  const seen = await page.evaluate(() => window.__csp || []);
  violations.push(...seen.map((v) => `${where}: ${v}`));
}

function send(n) {
  execFileSync(BIN, ["send", "--provider", "gitlab", "--secret", SECRET, HOOK], { stdio: "pipe" });
}

async function hostileEvent() {
  const response = await fetch(HOOK, {
    method: "POST",
    headers: { "content-type": "application/json", "x-gitlab-event": "Push Hook", "x-gitlab-token": SECRET, "x-evil": HOSTILE_HEADER },
    body: JSON.stringify({ object_kind: "push", ref: "refs/heads/<b>main</b>", user_username: HOSTILE, project: { path_with_namespace: "grp/<img src=x onerror=alert(9)>" }, note: HOSTILE }),
  });
  check(response.status === 202, "a hostile event is accepted");
  return (await response.json()).event_id;
}

async function rowState(page, eventId) {
  return page.locator(`#row-${eventId} .badge`).first().getAttribute("class");
}

// ---- sign in
const admin = await context();
const page = await admin.newPage();
await page.goto(`${CONSOLE}/ui/events`);
check(page.url().endsWith("/ui/login"), "signed out, the console sends you to sign in");
await page.fill("#token", ADMIN);
await page.click("#sign-in");
await page.waitForURL(/\/ui\/events$/);
check(!page.url().includes(ADMIN), "the token is not in the URL");
check(!(await page.content()).includes(ADMIN), "the token is not in the page source");
await page.waitForLoadState("load");
const transferred = await page.evaluate(() => performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).reduce((sum, e) => sum + (e.encodedBodySize || 0) + 300, 0));
check(transferred < 100 * 1024, `the first page is under 100 KB (${transferred} bytes)`);
const cookies = await admin.cookies();
const session = cookies.find((c) => c.name.includes("hookrelay_session"));
check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");

// ---- three events arrive live, without a reload
await page.evaluate(() => { window.__stay = true; });
await page.waitForFunction(() => document.getElementById("live-status").textContent.startsWith("Live"));
for (const n of [1, 2, 3]) send(n);
await page.waitForFunction(() => document.querySelectorAll("#rows tr[data-href]").length >= 3, null, { timeout: 15000 });
check(await page.evaluate(() => window.__stay === true), "three sent events appear live, with no reload");
const hostileId = await hostileEvent();
await page.waitForSelector(`#row-${hostileId}`);
// The sink fails: the deliveries turn red in place.
await page.waitForFunction((id) => document.querySelector(`#row-${id} .badge.s-dead`), hostileId, { timeout: 20000 });
check(await page.evaluate(() => window.__stay === true), "a failing delivery turns red live");
check(await page.evaluate(() => document.scripts.length === 1), "no script from a payload is in the list");
await page.screenshot({ path: path.join(SHOTS, "events-light.png"), fullPage: true });
await cspClean(page, "events");

// ---- keyboard: j selects, Enter opens, ? helps, / searches the bodies
await page.keyboard.press("j");
await page.keyboard.press("j");
await page.keyboard.press("k");
const selected = await page.evaluate(() => document.querySelector("#rows tr.selected")?.id);
check(selected && selected.startsWith("row-evt_"), "j and k move the selection");
check(page.url().endsWith(`#${selected}`), "the selection is in the URL");
await page.keyboard.press("?");
check(await page.evaluate(() => document.getElementById("help").open), "? opens the keyboard help");
await page.keyboard.press("Escape");
await page.keyboard.press("Enter");
await page.waitForURL(new RegExp(`/ui/events/${selected.slice(4)}$`));
check(true, "Enter opens the selected event");
await page.goto(`${CONSOLE}/ui/events`);
await page.keyboard.press("/");
check(await page.evaluate(() => document.activeElement?.id === "contains"), "/ goes to the body search");
await page.keyboard.type("alert(3)");
await page.keyboard.press("Enter");
await page.waitForURL(/contains=alert/);
const hits = await page.locator("#rows tr[data-href]").count();
check(hits === 1 && await page.locator(`#row-${hostileId}`).count() === 1, `a body search finds the one event holding the text (${hits})`);
await cspClean(page, "search");

// ---- the hostile event
await page.goto(`${CONSOLE}/ui/events/${hostileId}`);
check(await page.locator("#tree details").count() > 0, "the body shows as a JSON tree");
check(await page.locator(".timeline .attempt").count() >= 1, "the attempts show as a timeline");
const text = await page.locator("main").innerText();
check(text.includes(`<script>alert("body")</script>`), "a hostile body shows as text");
const allText = await page.evaluate(() => document.querySelector("main").textContent);
check(allText.includes(`<script>alert("response")</script>`), "a hostile response shows as text");
check(await page.evaluate(() => document.scripts.length === 1 && !document.querySelector("main img, main svg, main a[href^='javascript']")), "no element from a payload exists on the page");
check(text.includes("\\u{202e}"), "a bidi override shows as an escape");
// Copy as curl: pasted into a shell, the hostile header stays one argument.
const curl = await page.locator("#curl").inputValue();
check(!curl.includes(SECRET), "copy as curl leaves the token out");
fs.rmSync("/tmp/hookrelay-pwned", { force: true });
const args = execFileSync("bash", ["-c", `curl() { printf '%s\\n' "$@"; }; HOOKRELAY_URL=http://relay\n${curl}`]).toString();
check(!fs.existsSync("/tmp/hookrelay-pwned"), "copy as curl of a hostile header runs nothing");
check(args.includes(`x-evil: ${HOSTILE_HEADER}`), "the hostile header arrives as one argument, unchanged");
await page.screenshot({ path: path.join(SHOTS, "event-light.png"), fullPage: true });
await cspClean(page, "event");

// ---- compare two attempts
await page.click("a.compare");
await page.waitForSelector("#compare");
check(await page.locator("#compare tbody tr").count() >= 8, "two attempts side by side");
const compared = await page.locator("#compare").innerText();
check(/content-type: text\/html/i.test(compared) && compared.includes("Headers"), "the comparison shows the answers' headers");
await page.screenshot({ path: path.join(SHOTS, "compare-light.png"), fullPage: true });
await cspClean(page, "compare");

// ---- heal the sink, replay, watch it turn green
sinkFails = false;
await page.goto(`${CONSOLE}/ui/events/${hostileId}`);
await page.click("button.replay");
await page.waitForURL(new RegExp(`/ui/events/${hostileId}$`));
await page.waitForSelector("#deliveries .badge.s-succeeded", { timeout: 20000 });
check(true, "a replayed delivery turns green");
await cspClean(page, "event after replay");

// ---- bulk replay of the dead letters, after the count
await page.goto(`${CONSOLE}/ui/events?state=dead`);
const dead = await page.locator("#rows tr[data-href]").count();
check(dead === 3, `three dead events are listed (${dead})`);
await page.click("#bulk-replay");
const count = await page.locator("#bulk-count strong").innerText();
check(count === "3", `the bulk replay counts 3 first (${count})`);
await page.screenshot({ path: path.join(SHOTS, "bulk-light.png"), fullPage: true });
await page.click("#bulk-confirm");
await page.waitForURL(/\/ui\/jobs\/job_/);
await page.waitForFunction(() => document.getElementById("job-state")?.textContent === "finished", null, { timeout: 30000 });
await page.goto(`${CONSOLE}/ui/events?state=dead`);
await page.waitForFunction(() => document.querySelectorAll("#rows tr[data-href]").length === 0, null, { timeout: 20000 }).catch(async () => {
  await page.reload();
});
await page.reload();
check(await page.locator("#rows tr[data-href]").count() === 0, "after the bulk replay no event is dead");
await cspClean(page, "bulk");

// ---- pause and resume a destination
await page.goto(`${CONSOLE}/ui/destinations`);
await page.click("#destination-sink button.pause");
await page.waitForSelector("#destination-sink .badge[data-state='paused']");
check(await page.locator("#destination-sink svg rect").count() > 0, "the destination's last hour shows as a chart");
await page.screenshot({ path: path.join(SHOTS, "destinations-light.png"), fullPage: true });
await page.click("#destination-sink button.resume");
await page.waitForSelector("#destination-sink .badge[data-state='healthy']");
check(true, "pause and resume a destination");
await cspClean(page, "destinations");
await page.goto(`${CONSOLE}/ui/sources`);
check((await page.locator("main").innerText()).includes("accepted"), "sources show their requests by outcome");
check(await page.locator("svg rect").count() > 0, "a source's last hour shows as a chart");
await page.screenshot({ path: path.join(SHOTS, "sources-light.png"), fullPage: true });
await cspClean(page, "sources");

// ---- another origin cannot act for the signed-in browser
const before = sinkHits;
const evilPage = await admin.newPage();
const posted = evilPage.waitForResponse((r) => r.url().includes("/ui/destinations/sink/pause"));
await evilPage.goto(EVIL);
const refused = await posted;
check(refused.status() === 403, `a cross-origin POST is refused (${refused.status()})`);
await page.goto(`${CONSOLE}/ui/destinations`);
check(await page.locator("#destination-sink .badge[data-state='healthy']").count() === 1, "the destination was not paused by it");
await evilPage.close();

// ---- dark and phone-width screenshots
const dark = await context({ colorScheme: "dark" });
await dark.addCookies([session]);
const darkPage = await dark.newPage();
for (const [name, url] of [["events", "/ui/events"], ["event", `/ui/events/${hostileId}`], ["destinations", "/ui/destinations"], ["sources", "/ui/sources"], ["jobs", "/ui/jobs"]]) {
  await darkPage.goto(`${CONSOLE}${url}`);
  await darkPage.screenshot({ path: path.join(SHOTS, `${name}-dark.png`), fullPage: true });
  await cspClean(darkPage, `${name} dark`);
}
const phone = await context({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
await phone.addCookies([session]);
const phonePage = await phone.newPage();
for (const [name, url] of [["events", "/ui/events"], ["event", `/ui/events/${hostileId}`]]) {
  await phonePage.goto(`${CONSOLE}${url}`);
  await phonePage.screenshot({ path: path.join(SHOTS, `${name}-phone.png`), fullPage: true });
  const wide = await phonePage.evaluate(() => document.documentElement.scrollWidth);
  check(wide <= 400, `${name} fits a phone's width (${wide}px)`);
}

// ---- a read-only token sees no button that would fail, and a forged POST fails
const reader = await context();
const readPage = await reader.newPage();
await readPage.goto(`${CONSOLE}/ui/login`);
await readPage.fill("#token", READ);
await readPage.click("#sign-in");
await readPage.waitForURL(/\/ui\/events$/);
await readPage.goto(`${CONSOLE}/ui/events/${hostileId}`);
check(await readPage.locator("button.replay").count() === 0, "a read-only session sees no replay button");
await readPage.goto(`${CONSOLE}/ui/destinations`);
check(await readPage.locator("button.pause, button.resume").count() === 0, "a read-only session sees no pause button");
const forged = await readPage.evaluate(async () => {
  const token = document.querySelector("input[name=form_token]").value;
  const r = await fetch("/ui/destinations/sink/pause", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `form_token=${token}` });
  return r.status;
});
check(forged === 403, `a read-only session's forged POST is refused (${forged})`);
await cspClean(readPage, "read-only");

// ---- sign out makes the old cookie useless
await page.goto(`${CONSOLE}/ui/events`);
await page.click("#sign-out");
await page.waitForURL(/\/ui\/login$/);
const stale = await fetch(`${CONSOLE}/ui/events`, { headers: { cookie: `${session.name}=${session.value}` }, redirect: "manual" });
check(stale.status === 303 && stale.headers.get("location") === "/ui/login", "after sign-out the old cookie is refused");

// ---- accessibility: axe-core in a context that bypasses the CSP (never the CSP checks')
const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const audit = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const auditPage = await audit.newPage();
await auditPage.goto(`${CONSOLE}/ui/login`);
await auditPage.fill("#token", ADMIN);
await auditPage.click("#sign-in");
await auditPage.waitForURL(/\/ui\/events$/);
for (const url of ["/ui/events", `/ui/events/${hostileId}`, "/ui/destinations", "/ui/sources", "/ui/jobs"]) {
  await auditPage.goto(`${CONSOLE}${url}`);
  await auditPage.addScriptTag({ content: axeSource });
  const result = await auditPage.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of serious) console.log(`axe ${url}: ${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`);
  check(serious.length === 0, `axe-core finds no serious violation on ${url}`);
}

check(dialogs.length === 0, `no dialog opened (${dialogs.join(" | ")})`);
check(violations.length === 0, `zero CSP violations (${violations.join(" | ")})`);
await browser.close();
sink.close();
evil.close();
console.log("all console checks passed");
