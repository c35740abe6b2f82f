// Hash routing: #/desk, #/card/<member_id>, #/bestsellers, #/mesh, #/faults. The gateway
// serves one index.html at `/`, so the route lives in the fragment, which never reaches it.

import { describeError } from "./api";
import { h, replace } from "./dom";

/** Stops whatever a page started (streams, polling) when the page is left. */
export type Cleanup = () => void;

export interface Route {
  /** The nav entry it belongs to, and the first path segment. */
  name: string;
  title: string;
  render: (root: HTMLElement, argument: string | undefined) => Cleanup;
}

export class Router {
  private cleanup: Cleanup = () => {};

  constructor(
    private readonly routes: Route[],
    private readonly root: HTMLElement,
    private readonly onRoute: (route: Route) => void,
  ) {
    window.addEventListener("hashchange", () => this.show());
  }

  /** Renders the page the fragment names (the first route when it names none). */
  show(): void {
    const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
    const route = this.routes.find((candidate) => candidate.name === name) ?? this.routes[0];
    const argument = rest.length > 0 ? decodeURIComponent(rest.join("/")) : undefined;

    this.cleanup();
    this.cleanup = () => {};
    replace(this.root);
    this.root.setAttribute("data-page", route.name);
    this.onRoute(route);
    document.title = `${route.title} · bookmesh`;
    try {
      this.cleanup = route.render(this.root, argument);
    } catch (error) {
      // A page that throws while building still shows something: the error.
      replace(
        this.root,
        h("h1", {}, route.title),
        h("div", { class: "status error" }, `This page failed: ${describeError(error)}`),
      );
    }
  }
}
