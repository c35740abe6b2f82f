// A few helpers to build the DOM from code: no framework, so the pages stay plain functions
// that create elements and replace them when data arrives.

export type Child = Node | string | number | null | undefined | false;

type AttrValue = string | number | boolean | null | undefined;
type Listener = (event: Event) => void;
export type Attrs = Record<string, AttrValue | Listener>;

/**
 * Creates an element. `on<event>` attributes become listeners; `true` sets a boolean
 * attribute, `false`, `null` and `undefined` leave it out; everything else is set as text.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  append(element, ...children);
  return element;
}

/** Appends children, skipping the empty ones (so `cond && h(...)` reads naturally). */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** A date and time for people, in the browser's locale ("—" when there is none). */
export function formatTime(date: Date | undefined): string {
  if (!date || Number.isNaN(date.getTime()) || date.getTime() === 0) return "—";
  return date.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** Resolves after `ms`, or at once when `signal` aborts (so a page can leave mid-wait). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * Runs `task` now and then every `ms` after each run finished (never two at once, so a slow
 * gateway is not asked again before it answered), until `signal` aborts.
 */
export function poll(ms: number, signal: AbortSignal, task: () => Promise<void>): void {
  void (async () => {
    while (!signal.aborted) {
      await task();
      await sleep(ms, signal);
    }
  })();
}
