// Vite builds the console into dist/, which the gateway serves at `/` (index.html at `/`,
// the bundles under `/assets/`). Relative asset paths (base "./") keep the build independent
// of where it is mounted.
//
// `npm run dev` serves the sources with live reload and sends everything that is not the app
// itself to the gateway of `make run`: the gRPC-Web paths (/bookmesh.<package>.<Service>/...),
// the sign-in (/auth/...) and the mesh and fault views (/api/...). The console then runs on
// Vite's origin exactly as it does on the gateway's. BOOKMESH_GATEWAY names another gateway.
import { defineConfig } from "vite";

// Node's, typed here so the config needs no @types/node.
declare const process: { env: Record<string, string | undefined> };

const gateway = process.env.BOOKMESH_GATEWAY ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
  },
  server: {
    host: "127.0.0.1",
    proxy: {
      "^/(bookmesh\\.[^/]+/|auth/|api/)": { target: gateway, changeOrigin: false },
    },
  },
});
