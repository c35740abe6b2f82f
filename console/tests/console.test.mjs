// The console in a real browser against a real mesh (scripts/test-console.sh starts one): a
// librarian's day at the desk, the card following the rental saga live, and the operator
// pages. Every wait is on what the page shows (a selector, with a deadline), never a sleep.
//
//   BOOKMESH_CONSOLE_URL      where the gateway serves the console (http://127.0.0.1:8080)
//   BOOKMESH_SCREENSHOT_DIR   where the screenshots go (target/console-screenshots)
//   CHROMIUM                  the browser (/usr/bin/chromium)

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const repository = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const baseUrl = (process.env.BOOKMESH_CONSOLE_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const screenshots = path.resolve(repository, process.env.BOOKMESH_SCREENSHOT_DIR ?? "target/console-screenshots");

/** How long the mesh gets to finish a saga step, or the gateway to refresh a figure. */
const SAGA_TIMEOUT_MS = 15_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SERVICES = ["book", "member", "rental", "bestbook"];
const FAULT_KINDS = ["latency", "error", "hang", "db-outage", "poison-event", "event-delay", "duplicate-delivery", "crash"];

let browser;
let page;
/** Uncaught exceptions in the page: each one is a bug, whatever the page shows. */
const pageErrors = [];

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(SAGA_TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error));
});

after(async () => {
  await browser?.close();
});

const byTestId = (id) => `[data-testid="${id}"]`;
const text = async (selector) => ((await page.textContent(selector)) ?? "").trim();
const shot = (name) => page.screenshot({ path: path.join(screenshots, name), fullPage: true });

/** Signs in through the sign-in bar's development form, and waits until the bar says so. */
async function signInAs(role) {
  if (await page.$(byTestId("signout"))) {
    await page.click(byTestId("signout"));
  }
  await page.selectOption(byTestId("signin-role"), role);
  await page.click(byTestId("signin-submit"));
  const who = await page.waitForSelector(`${byTestId("signin-who")}[data-roles~="${role}"]`);
  return (await who.textContent()) ?? "";
}

/** The short event types of a saga's steps, as the timeline lists them (oldest first). */
async function steps(bookId) {
  return page.$$eval(`${byTestId(`saga-${bookId}`)} ${byTestId("saga-step")}`, (items) =>
    items.map((item) => item.getAttribute("data-event")),
  );
}

test("the console: desk, card, best-sellers, mesh and faults", { timeout: 180_000 }, async (t) => {
  let memberId;
  let bookId;
  try {
    await t.test("signs in as staff with the development sign-in", async () => {
      await page.goto(`${baseUrl}/#/desk`);
      await page.waitForSelector(byTestId("form-member"));
      const who = await signInAs("admin");
      assert.match(who, /Signed in as/);
      assert.match(who, /admin/);
      assert.match(who, /librarian/, "role admin comes with librarian");
    });

    await t.test("shows a field violation next to its field", async () => {
      await page.fill(`${byTestId("form-member")} input[name="name"]`, "Ada Lovelace");
      await page.fill(`${byTestId("form-member")} input[name="email"]`, "not-an-email");
      await page.click(byTestId("submit-member"));
      // The error sits in the email input's own field block, under the input.
      const error = await page.waitForSelector(
        `${byTestId("form-member")} .field:has(input[name="email"]) ${byTestId("field-error-member-email")}:not(:empty)`,
      );
      assert.match((await error.textContent()) ?? "", /must/);
      assert.equal(await text(byTestId("field-error-member-name")), "", "name was fine");
      assert.equal(await page.getAttribute(`${byTestId("form-member")} input[name="email"]`, "aria-invalid"), "true");
      assert.match(await text(byTestId("status-member")), /invalid_argument/);
    });

    await t.test("registers a member and a book, and fills the rent form with their ids", async () => {
      await page.fill(`${byTestId("form-member")} input[name="email"]`, `ada.${Date.now()}@example.org`);
      await page.click(byTestId("submit-member"));
      memberId = await text(byTestId("new-member-id"));
      assert.match(memberId, UUID);
      assert.equal(await text(byTestId("field-error-member-email")), "", "the error is gone");

      const book = {
        title: "Dune",
        author: "Frank Herbert",
        isbn: "978-0-441-01359-3",
        publisher: "Ace",
        published_on: "1965-08-01",
        classification: "Fiction",
        location: "Shelf 1",
      };
      for (const [field, value] of Object.entries(book)) {
        await page.fill(`${byTestId("form-book")} input[name="${field}"]`, value);
      }
      await page.click(byTestId("submit-book"));
      bookId = await text(byTestId("new-book-id"));
      assert.match(bookId, UUID);

      assert.equal(await page.inputValue(`${byTestId("form-rent")} input[name="member_id"]`), memberId);
      assert.equal(await page.inputValue(`${byTestId("form-rent")} input[name="book_id"]`), bookId);
    });

    await t.test("rents the book and links to the member's card", async () => {
      await page.click(byTestId("submit-rent"));
      await page.waitForSelector(`${byTestId("status-rent")}[data-kind="ok"]`);
      assert.match(await text(byTestId("status-rent")), /Rented/);
      await shot("desk.png");
      await page.click(`${byTestId("status-rent")} ${byTestId("card-link")}`);
      assert.equal(new URL(page.url()).hash, `#/card/${memberId}`);
    });

    await t.test("the card follows the saga live until RENTED", async () => {
      await page.waitForSelector(`${byTestId(`saga-${bookId}`)}[data-state="RENTED"]`);
      const events = await steps(bookId);
      assert.ok(events.includes("ItemRented"), `steps: ${events}`);
      assert.ok(events.includes("BookReserved"), `steps: ${events}`);
      assert.ok(events.indexOf("ItemRented") < events.indexOf("BookReserved"), `oldest first: ${events}`);
      assert.match(await text(`${byTestId(`saga-${bookId}`)} header`), /Dune/);
      assert.equal(await page.getAttribute(byTestId("watch-status"), "data-state"), "live");
      // The card is read again on each history message: it shows the book RENTED too.
      await page.waitForSelector(`${byTestId(`card-item-${bookId}`)}:has-text("RENTED")`);
      assert.equal(await page.getAttribute(byTestId("card-status"), "data-status"), "AVAILABLE");
      await shot("card.png");
    });

    await t.test("a return at the desk shows on the card as RETURNED", async () => {
      await page.click(byTestId("nav-desk"));
      assert.equal(await page.inputValue(`${byTestId("form-return")} input[name="member_id"]`), memberId);
      assert.equal(await page.inputValue(`${byTestId("form-return")} input[name="book_id"]`), bookId);
      await page.click(byTestId("submit-return"));
      await page.waitForSelector(`${byTestId("status-return")}[data-kind="ok"]`);
      await page.click(`${byTestId("status-return")} ${byTestId("card-link")}`);
      await page.waitForSelector(`${byTestId(`saga-${bookId}`)}[data-state="RETURNED"]`);
      const events = await steps(bookId);
      assert.ok(events.includes("ItemReturned"), `steps: ${events}`);
      assert.ok(events.includes("BookReturned"), `steps: ${events}`);
      assert.ok(events.indexOf("ItemReturned") < events.indexOf("BookReturned"), `oldest first: ${events}`);
      await page.waitForSelector(`${byTestId("rental-card")} :text("None.")`);
    });

    await t.test("best-sellers list the rented book", async () => {
      await page.click(byTestId("nav-bestsellers"));
      // The ranking is a projection of confirmed rentals: the page re-reads it until it shows.
      const row = await page.waitForSelector(byTestId(`bestseller-${bookId}`));
      assert.equal(await row.getAttribute("data-rentals"), "1");
      assert.match((await row.textContent()) ?? "", /Dune/);
      await shot("bestsellers.png");
    });

    await t.test("the mesh page lists every service with its health", async () => {
      await page.click(byTestId("nav-mesh"));
      for (const service of SERVICES) {
        const card = await page.waitForSelector(byTestId(`mesh-service-${service}`));
        assert.equal(await card.getAttribute("data-health"), "healthy", `${service} is up and ready`);
        assert.match((await (await card.$(byTestId("mesh-health")))?.textContent()) ?? "", /healthy · [1-9]\d*\/[1-9]\d* ready/);
        assert.ok((await card.$$(byTestId("mesh-replica"))).length >= 1, `${service} lists its replicas`);
      }
      await page.waitForSelector(byTestId("mesh-service-gateway"));
      // Rental calls book and member through breakers; the mesh shows them.
      assert.ok(await page.$(`${byTestId("mesh-service-rental")} [data-testid^="breaker-rental-"]`), "rental's breakers");
      assert.equal(await text(byTestId("mesh-error")), "");
      await shot("mesh.png");
    });

    await t.test("the faults page lists a switch per fault and service, and an admin flips one", async () => {
      await page.click(byTestId("nav-faults"));
      for (const service of SERVICES) {
        await page.waitForSelector(byTestId(`faults-service-${service}`));
        for (const kind of FAULT_KINDS) {
          assert.ok(await page.$(byTestId(`fault-switch-${service}-${kind}`)), `${service} ${kind}`);
        }
      }
      assert.equal(await page.$(byTestId("faults-role-note")), null, "no warning for an admin");

      // On: 300 ms on bestbook's calls (harmless for the rest of the run), then off again.
      const row = byTestId("fault-bestbook-latency");
      await page.click(`${row} .switch`);
      await page.waitForSelector(`${row}[data-active="true"]`);
      const outcome = await page.waitForSelector(`${byTestId("fault-result-bestbook-latency")}[data-ok="true"]`);
      assert.match((await outcome.textContent()) ?? "", /200 ok/);
      assert.match(await page.inputValue(byTestId("fault-settings-bestbook-latency")), /"fixed_ms":300/);
      await shot("faults.png");
      await page.click(`${row} .switch`);
      await page.waitForSelector(`${row}[data-active="false"]`);
    });

    await t.test("a librarian's switch is refused, and the page says why", async () => {
      await signInAs("librarian");
      await page.waitForSelector(byTestId("faults-role-note"));
      const row = byTestId("fault-bestbook-latency");
      await page.waitForSelector(`${row}[data-active="false"]`);
      await page.click(`${row} .switch`);
      const outcome = await page.waitForSelector(`${byTestId("fault-result-bestbook-latency")}[data-ok="false"]`);
      assert.match((await outcome.textContent()) ?? "", /403 refused: needs role admin/);
      assert.equal(await page.getAttribute(row, "data-active"), "false", "nothing switched on");
      assert.equal(await page.isChecked(byTestId("fault-switch-bestbook-latency")), false);
    });
  } catch (error) {
    await shot("failure.png").catch(() => {});
    throw error;
  }
  assert.deepEqual(pageErrors.map(String), [], "no uncaught errors in the page");
});
