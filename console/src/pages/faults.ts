// Fault injection (docs/faults.md) from the browser: per service, a switch per fault kind with
// its settings as JSON. The gateway applies a switch on every replica of the service, forwarding
// the signed-in user's token (the services want role admin), and answers each replica's
// status, which is shown as is: a refusal must be visible, not a switch that silently
// snaps back.

import { describeError, fetchJson, HttpError } from "../api";
import { append, h, replace, type Child } from "../dom";
import type { Cleanup } from "../router";
import { currentSession, hasRole } from "../session";

interface FaultState {
  name: string;
  active: boolean;
  settings: Record<string, unknown> | null;
}

interface ReplicaFaults {
  address: string;
  enabled: boolean;
  faults?: FaultState[];
  /** Set by the gateway when it could not read the replica's faults. */
  error?: string;
}

interface FaultsAnswer {
  services: { name: string; replicas: ReplicaFaults[] }[];
}

interface SwitchAnswer {
  replicas: { address: string; status: number; body: unknown }[];
}

/**
 * What a fault is for, and settings to start from: each a valid setting that shows the fault
 * working without taking the mesh down for good (rates below 1 where a share makes sense).
 */
const KINDS: Record<string, { about: string; defaults: Record<string, unknown> }> = {
  latency: { about: "Matching calls answer late: fixed_ms, or a random delay up to max_ms.", defaults: { fixed_ms: 300 } },
  error: { about: "Matching calls are answered with code, at rate: watch the callers' breakers open.", defaults: { code: "UNAVAILABLE", rate: 0.5 } },
  hang: { about: "Matching calls get no answer until their deadline.", defaults: { rate: 0.5 } },
  "db-outage": { about: "The database is gone: health NOT_SERVING, calls UNAVAILABLE, consumers wait.", defaults: {} },
  "poison-event": { about: "The consumer rejects events (of event_type, or any): dead-lettered after its retries.", defaults: { rate: 1 } },
  "event-delay": { about: "Each delivered event waits delay_ms before it is applied: sagas complete late.", defaults: { delay_ms: 3000 } },
  "duplicate-delivery": { about: "Each applied event is delivered once more: the inbox must ignore it.", defaults: { rate: 1 } },
  crash: { about: "The process aborts at point (after-commit or after-apply), as kill -9 would.", defaults: { point: "after-commit" } },
};

export function renderFaults(root: HTMLElement): Cleanup {
  const leave = new AbortController();
  // Kept across re-renders of the listing: what the user typed, and each switch's last outcome.
  const drafts = new Map<string, string>();
  const outcomes = new Map<string, { ok: boolean; lines: Child[] }>();
  const body = h("div", { "data-testid": "faults" }, h("p", { class: "muted" }, "Loading…"));
  const refresh = h("button", { type: "button", "data-testid": "faults-refresh" }, "Refresh");
  refresh.addEventListener("click", () => void load());

  const session = currentSession();
  append(
    root,
    h("h1", {}, "Faults"),
    h(
      "p",
      { class: "muted" },
      "Break a service on purpose and watch the defences work (docs/faults.md). A switch applies to every replica of the service.",
    ),
    hasRole("admin")
      ? null
      : h(
          "div",
          { class: "status info", "data-testid": "faults-role-note" },
          session
            ? `Switching faults needs role admin; you are signed in as ${session.subject} (${session.roles.join(", ") || "no roles"}). The services will refuse.`
            : "Switching faults needs role admin: sign in as admin (top right).",
        ),
    h("div", { class: "toolbar" }, refresh),
    h(
      "details",
      { class: "legend" },
      h("summary", {}, "What each fault does"),
      h(
        "dl",
        {},
        ...Object.entries(KINDS).flatMap(([kind, { about }]) => [h("dt", {}, kind), h("dd", {}, about)]),
      ),
      h(
        "p",
        { class: "muted" },
        "Settings: method is a method name (GetBook), a prefix and * (Get*), or * (every method, the default); rate is the share of calls or events hit, 0 to 1 (default 1); times are in ms, at most 60000.",
      ),
    ),
    body,
  );

  async function load(): Promise<void> {
    let answer: FaultsAnswer;
    try {
      answer = await fetchJson<FaultsAnswer>("/api/faults", { auth: true, signal: leave.signal });
    } catch (error) {
      if (leave.signal.aborted) return;
      replace(body, h("div", { class: "status error", "data-testid": "faults-error" }, `Could not read /api/faults: ${describeError(error)}`));
      return;
    }
    if (leave.signal.aborted) return;
    const services = answer.services ?? [];
    replace(
      body,
      services.length
        ? h("div", { class: "fault-grid" }, ...services.map((service) => serviceView(service.name, service.replicas ?? [])))
        : h("p", { class: "muted" }, "The gateway lists no services."),
    );
  }

  function serviceView(service: string, replicas: ReplicaFaults[]): HTMLElement {
    // The kinds in the order the services list them (every replica lists the same ones).
    const kinds: string[] = [];
    for (const replica of replicas) {
      for (const fault of replica.faults ?? []) if (!kinds.includes(fault.name)) kinds.push(fault.name);
    }
    const enabled = replicas.some((replica) => replica.enabled);
    return h(
      "section",
      { class: "card", "data-testid": `faults-service-${service}` },
      h("h2", {}, service),
      h(
        "ul",
        { class: "replicas" },
        ...replicas.map((replica) =>
          h(
            "li",
            {},
            h("span", { class: `dot ${replica.error ? "bad" : replica.enabled ? "ok" : "warn"}` }),
            h("code", {}, replica.address),
            replica.error
              ? ` unreachable: ${replica.error}`
              : replica.enabled
                ? " faults enabled"
                : " faults not enabled (started without --faults-enabled)",
          ),
        ),
      ),
      kinds.length === 0
        ? h("p", { class: "muted" }, "No faults listed.")
        : h(
            "table",
            { class: "faults" },
            h("thead", {}, h("tr", {}, h("th", {}, "Fault"), h("th", {}, "On"), h("th", {}, "Settings (JSON)"))),
            h("tbody", {}, ...kinds.map((kind) => faultRow(service, kind, replicas, enabled))),
          ),
    );
  }

  function faultRow(service: string, kind: string, replicas: ReplicaFaults[], enabled: boolean): HTMLElement {
    const key = `${service}/${kind}`;
    const states = replicas.map((replica) => replica.faults?.find((fault) => fault.name === kind)).filter((f) => f !== undefined);
    const activeCount = states.filter((fault) => fault.active).length;
    const active = activeCount === 0 ? "false" : activeCount === states.length ? "true" : "partial";
    const current = states.find((fault) => fault.active && fault.settings)?.settings;

    const toggle = h("input", {
      type: "checkbox",
      role: "switch",
      "aria-label": `${kind} on ${service}`,
      "data-testid": `fault-switch-${service}-${kind}`,
      disabled: !enabled,
    });
    toggle.checked = activeCount > 0;
    const settings = h("input", {
      class: "json",
      spellcheck: "false",
      autocomplete: "off",
      "aria-label": `${kind} settings`,
      "data-testid": `fault-settings-${service}-${kind}`,
    });
    settings.value = drafts.get(key) ?? JSON.stringify(current ?? KINDS[kind]?.defaults ?? {});
    settings.addEventListener("input", () => drafts.set(key, settings.value));
    const apply = h("button", { type: "button", disabled: !enabled, "data-testid": `fault-apply-${service}-${kind}` }, activeCount > 0 ? "Update" : "Switch on");
    const outcome = h("div", { class: "outcome", "data-testid": `fault-result-${service}-${kind}` });
    const last = outcomes.get(key);
    if (last) {
      outcome.className = `outcome ${last.ok ? "ok" : "error"}`;
      outcome.setAttribute("data-ok", String(last.ok));
      replace(outcome, ...last.lines);
    }

    async function send(on: boolean): Promise<void> {
      let payload: unknown;
      if (on) {
        try {
          payload = JSON.parse(settings.value || "{}");
        } catch (error) {
          toggle.checked = activeCount > 0;
          outcomes.set(key, { ok: false, lines: [`The settings are not JSON: ${(error as Error).message}`] });
          outcome.className = "outcome error";
          outcome.setAttribute("data-ok", "false");
          replace(outcome, ...outcomes.get(key)!.lines);
          return;
        }
      }
      toggle.disabled = true;
      apply.disabled = true;
      replace(outcome, on ? "switching on…" : "switching off…");
      outcome.className = "outcome";
      outcome.removeAttribute("data-ok");
      const path = `/api/faults/${encodeURIComponent(service)}/${encodeURIComponent(kind)}`;
      try {
        const answer = await fetchJson<SwitchAnswer>(path, on ? { method: "PUT", body: payload, auth: true } : { method: "DELETE", auth: true });
        const results = answer.replicas ?? [];
        const ok = results.length > 0 && results.every((result) => result.status >= 200 && result.status < 300);
        outcomes.set(key, {
          ok,
          lines: results.length
            ? results.map((result) => h("div", {}, replicaOutcome(result, replicas)))
            : ["The gateway found no replica to switch."],
        });
      } catch (error) {
        outcomes.set(key, { ok: false, lines: [refusal(error)] });
      }
      if (!on) drafts.delete(key);
      // Show what the replicas now say, with the outcome kept beside the switch.
      await load();
    }

    toggle.addEventListener("change", () => void send(toggle.checked));
    apply.addEventListener("click", () => void send(true));
    settings.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && enabled) void send(true);
    });

    return h(
      "tr",
      { "data-testid": `fault-${service}-${kind}`, "data-active": active },
      h("td", { title: KINDS[kind]?.about ?? "" }, h("strong", {}, kind)),
      h(
        "td",
        {},
        h("label", { class: "switch" }, toggle, h("span", { class: "slider" })),
        active === "partial" ? h("div", { class: "hint" }, `on ${activeCount}/${states.length}`) : null,
      ),
      h("td", {}, h("div", { class: "settings" }, settings, apply), outcome),
    );
  }

  void load();
  return () => leave.abort();
}

/** One replica's answer to a switch, for people: "200 ok", or the refusal and what it needs. */
function replicaOutcome(result: SwitchAnswer["replicas"][number], replicas: ReplicaFaults[]): string {
  const body = typeof result.body === "object" && result.body !== null ? (result.body as Record<string, unknown>) : {};
  const said = typeof body.error === "string" ? body.error : "";
  const enabled = replicas.find((replica) => replica.address === result.address)?.enabled ?? true;
  let meaning: string;
  if (result.status >= 200 && result.status < 300) meaning = "ok";
  else if (result.status === 401) meaning = "refused: sign in (no valid token)";
  else if (result.status === 403) meaning = enabled ? "refused: needs role admin" : "refused: faults are not enabled on this replica";
  else if (result.status === 400) meaning = "refused: settings not accepted";
  else if (result.status === 502) meaning = "failed: the gateway could not reach the replica";
  else meaning = "refused";
  return `${result.address}: ${result.status} ${meaning}${said ? ` (${said})` : ""}`;
}

function refusal(error: unknown): string {
  if (error instanceof HttpError && error.status === 401) return `${describeError(error)} — sign in as admin.`;
  if (error instanceof HttpError && error.status === 403) return `${describeError(error)} — needs role admin.`;
  return describeError(error);
}
