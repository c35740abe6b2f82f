// The bookmesh console: a header (nav and sign-in) and one page at a time under it, chosen by
// the URL's fragment. Signing in or out re-renders the page, so what it shows (and the
// streams it holds) always run under the current token.

import "./style.css";

import { h } from "./dom";
import { renderBestsellers } from "./pages/bestsellers";
import { renderCard } from "./pages/card";
import { renderDesk } from "./pages/desk";
import { renderFaults } from "./pages/faults";
import { renderMesh } from "./pages/mesh";
import { Router, type Route } from "./router";
import { onSessionChange } from "./session";
import { renderSignIn } from "./signin";

const routes: Route[] = [
  { name: "desk", title: "Library desk", render: (root) => renderDesk(root) },
  { name: "card", title: "Member's card", render: renderCard },
  { name: "bestsellers", title: "Best-sellers", render: (root) => renderBestsellers(root) },
  { name: "mesh", title: "Mesh", render: (root) => renderMesh(root) },
  { name: "faults", title: "Faults", render: (root) => renderFaults(root) },
];

const links = new Map(
  routes.map((route) => [
    route.name,
    h("a", { href: `#/${route.name}`, "data-testid": `nav-${route.name}` }, route.title),
  ]),
);
const signInBar = h("div", { class: "signin-bar", "data-testid": "signin-bar" });
const page = h("main", { id: "page" });

document.getElementById("app")!.append(
  h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: "#/desk" }, "bookmesh"),
    h("nav", {}, ...links.values()),
    signInBar,
  ),
  page,
);

const router = new Router(routes, page, (route) => {
  for (const [name, link] of links) {
    if (name === route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
});

onSessionChange(() => {
  renderSignIn(signInBar);
  router.show();
});
renderSignIn(signInBar);
router.show();
