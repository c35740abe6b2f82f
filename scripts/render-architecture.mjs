// Renders docs/architecture/architecture.dot into docs/images/architecture.svg with Graphviz
// compiled to WebAssembly (@viz-js/viz, installed by `npm ci --prefix .ci/tools`): no system
// Graphviz, and the same output on every machine. `--check` renders to memory and fails if the
// committed SVG differs (CI), so the picture never drifts from its source.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(join(root, ".ci/tools/package.json"));
const { instance } = await import(require.resolve("@viz-js/viz"));

const source = join(root, "docs/architecture/architecture.dot");
const target = join(root, "docs/images/architecture.svg");
const viz = await instance();
const svg = viz.renderString(readFileSync(source, "utf8"), { format: "svg", engine: "dot" });

if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(target, "utf8");
  } catch {
    // Missing counts as different.
  }
  if (committed !== svg) {
    console.error(`${target} is not what ${source} renders to: run make architecture and commit both`);
    process.exit(1);
  }
  console.log("docs/images/architecture.svg matches docs/architecture/architecture.dot");
} else {
  writeFileSync(target, svg);
  console.log(`wrote ${target} (Graphviz ${viz.graphvizVersion})`);
}
