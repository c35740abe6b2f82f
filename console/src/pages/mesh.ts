// The mesh at a glance, from the gateway's GET /api/mesh (signed in): per service its
// replicas (up, ready), request and error rates, p99 latency and circuit breakers, polled
// every 2 s (the gateway refreshes its figures at most once a second).

import { describeError, fetchJson } from "../api";
import { formatTime, h, poll, replace } from "../dom";
import type { Cleanup } from "../router";

export interface MeshReplica {
  address: string;
  up: boolean;
  ready: boolean;
}

export interface MeshBreaker {
  upstream: string;
  state: "closed" | "open" | "half_open" | string;
}

export interface MeshService {
  name: string;
  replicas: MeshReplica[];
  request_rate: number;
  error_rate: number;
  p99_ms: number | null;
  breakers: MeshBreaker[];
}

interface MeshAnswer {
  services: MeshService[];
}

const REFRESH_MS = 2_000;

/**
 * One word for a service's health: `healthy` (every replica up and ready), `degraded` (some),
 * `down` (none), or `self` for the gateway, which lists no replicas (it is the one answering).
 */
export function health(service: MeshService): "healthy" | "degraded" | "down" | "self" {
  if (service.replicas.length === 0) return service.name === "gateway" ? "self" : "down";
  const ready = service.replicas.filter((replica) => replica.up && replica.ready).length;
  if (ready === service.replicas.length) return "healthy";
  return ready === 0 ? "down" : "degraded";
}

export function renderMesh(root: HTMLElement): Cleanup {
  const leave = new AbortController();
  const updated = h("span", { class: "muted", "data-testid": "mesh-updated" });
  const problem = h("div", { "data-testid": "mesh-error" });
  const grid = h("div", { class: "service-grid", "data-testid": "mesh-services" }, h("p", { class: "muted" }, "Loading…"));

  root.append(
    h("h1", {}, "Mesh"),
    h("p", { class: "muted" }, "Replicas, traffic and circuit breakers of every service, as the gateway sees them. Refreshed every 2 s."),
    h("div", { class: "toolbar" }, updated),
    problem,
    grid,
  );

  poll(REFRESH_MS, leave.signal, async () => {
    try {
      const mesh = await fetchJson<MeshAnswer>("/api/mesh", { signal: leave.signal });
      if (leave.signal.aborted) return;
      replace(problem);
      problem.className = "";
      updated.textContent = `updated ${formatTime(new Date())}`;
      replace(grid, ...(mesh.services ?? []).map(serviceCard));
      if (!mesh.services?.length) replace(grid, h("p", { class: "muted" }, "The gateway lists no services."));
    } catch (error) {
      if (leave.signal.aborted) return;
      // The last figures stay on screen, marked stale; the error says why.
      problem.className = "status error";
      replace(problem, `Could not read /api/mesh: ${describeError(error)}`);
      grid.classList.add("stale");
      return;
    }
    grid.classList.remove("stale");
  });
  return () => leave.abort();
}

function serviceCard(service: MeshService): HTMLElement {
  const state = health(service);
  const ready = service.replicas.filter((replica) => replica.up && replica.ready).length;
  return h(
    "article",
    { class: `card service health-${state}`, "data-testid": `mesh-service-${service.name}`, "data-health": state },
    h(
      "div",
      { class: "section-head" },
      h("h2", {}, service.name),
      h(
        "span",
        { class: `badge health-${state}`, "data-testid": "mesh-health" },
        state === "self" ? "serving" : `${state} · ${ready}/${service.replicas.length} ready`,
      ),
    ),
    h(
      "dl",
      { class: "figures" },
      h("dt", {}, "requests"),
      h("dd", {}, `${fixed(service.request_rate, 1)}/s`),
      h("dt", {}, "errors"),
      h("dd", { class: service.error_rate > 0.05 ? "bad" : "" }, `${fixed(service.error_rate * 100, 1)} %`),
      h("dt", {}, "p99"),
      h("dd", {}, service.p99_ms === null || service.p99_ms === undefined ? "—" : `${fixed(service.p99_ms, 1)} ms`),
    ),
    service.replicas.length > 0
      ? h(
          "ul",
          { class: "replicas" },
          ...service.replicas.map((replica) =>
            h(
              "li",
              { "data-testid": "mesh-replica", "data-up": String(replica.up), "data-ready": String(replica.ready) },
              h("span", { class: `dot ${replica.up && replica.ready ? "ok" : replica.up ? "warn" : "bad"}` }),
              h("code", {}, replica.address),
              replica.up ? (replica.ready ? " ready" : " up, not ready") : " down",
            ),
          ),
        )
      : null,
    service.breakers.length > 0
      ? h(
          "div",
          { class: "breakers" },
          "breakers: ",
          ...service.breakers.map((breaker) =>
            h(
              "span",
              { class: `badge breaker-${breaker.state}`, "data-testid": `breaker-${service.name}-${breaker.upstream}`, "data-state": breaker.state },
              `${breaker.upstream}: ${breaker.state.replace("_", "-")}`,
            ),
          ),
        )
      : h("div", { class: "breakers muted" }, "no breakers"),
  );
}

function fixed(value: number | null | undefined, digits: number): string {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}
