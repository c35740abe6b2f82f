// Best-sellers: GetBestBooks, the bestbook service's read model of confirmed rentals. It is
// eventually consistent (a rental shows up shortly after its saga confirms it), so the page
// reads it again every few seconds rather than once.

import { bestBooks, CALL_TIMEOUT_MS, explainError } from "../api";
import { formatTime, h, poll, replace } from "../dom";
import type { Cleanup } from "../router";

const REFRESH_MS = 5_000;
const LIMITS = [10, 25, 100];

export function renderBestsellers(root: HTMLElement): Cleanup {
  const leave = new AbortController();
  let limit = LIMITS[0];

  const select = h(
    "select",
    { id: "bestseller-limit", "data-testid": "bestseller-limit" },
    ...LIMITS.map((n) => h("option", { value: n }, `Top ${n}`)),
  );
  select.addEventListener("change", () => {
    limit = Number(select.value);
    void load();
  });
  const updated = h("span", { class: "muted", "data-testid": "bestsellers-updated" });
  const body = h("section", { class: "card", "data-testid": "bestsellers" }, h("p", { class: "muted" }, "Loading…"));

  root.append(
    h("h1", {}, "Best-sellers"),
    h(
      "p",
      { class: "muted" },
      "The most rented books, from the bestbook service's projection of confirmed rentals. Refreshed every 5 s. ",
    ),
    h("div", { class: "toolbar" }, select, updated),
    body,
  );

  async function load(): Promise<void> {
    try {
      const { books } = await bestBooks.getBestBooks(
        { limit },
        { signal: leave.signal, timeoutMs: CALL_TIMEOUT_MS },
      );
      if (leave.signal.aborted) return;
      updated.textContent = `updated ${formatTime(new Date())}`;
      if (books.length === 0) {
        replace(body, h("p", { class: "muted", "data-testid": "no-bestsellers" }, "No confirmed rentals yet."));
        return;
      }
      replace(
        body,
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "Title"), h("th", { class: "num" }, "Rentals"))),
          h(
            "tbody",
            {},
            ...books.map((book) =>
              h(
                "tr",
                { "data-testid": `bestseller-${book.bookId}`, "data-rentals": String(book.rentals) },
                h("td", { class: "num" }, String(book.rank)),
                h("td", {}, book.title || "(untitled)", h("br"), h("code", { class: "id" }, book.bookId)),
                h("td", { class: "num" }, String(book.rentals)),
              ),
            ),
          ),
        ),
      );
    } catch (error) {
      if (leave.signal.aborted) return;
      // Keep the last ranking on screen, marked as stale, with the reason.
      updated.textContent = "";
      body.querySelector('[data-testid="bestsellers-error"]')?.remove();
      body.prepend(
        h("div", { class: "status error", "data-testid": "bestsellers-error" }, `Could not read the best-sellers: ${explainError(error)}`),
      );
      body.querySelector('p.muted:only-child')?.remove();
    }
  }

  poll(REFRESH_MS, leave.signal, load);
  return () => leave.abort();
}
