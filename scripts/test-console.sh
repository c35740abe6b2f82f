#!/usr/bin/env bash
# Builds the browser console and runs its test in a real browser against the real mesh:
#   1. npm ci and npm run build in console/ (buf generate, tsc --noEmit, vite build → console/dist);
#   2. cargo build of the gateway (which builds console/dist into its binary: the test checks
#      the copy users get), the launcher and the rest of what clients/with-mesh.sh runs;
#      SKIP_CARGO_BUILD=1 skips it and points the gateway at console/dist instead
#      (BOOKMESH_CONSOLE_DIR), for quick runs while working on the console;
#   3. the mesh started by clients/with-mesh.sh, and node's test runner on console/tests/
#      (Playwright driving Debian's Chromium; installed here with apt when missing and root).
# CHROMIUM (/usr/bin/chromium), BOOKMESH_CONSOLE_URL (http://127.0.0.1:8080) and
# BOOKMESH_SCREENSHOT_DIR (target/console-screenshots) are passed on to the test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

buf="$root/.ci/tools/node_modules/.bin/buf"
if [[ ! -x "$buf" ]]; then
  echo "==> installing buf (.ci/tools)"
  npm ci --prefix .ci/tools --no-audit --no-fund --loglevel=error
fi

chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x "$chromium" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "==> installing Debian's chromium"
  apt-get install -y -qq chromium >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
if [[ ! -x "$chromium" ]]; then
  echo "error: no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2
  exit 1
fi

echo "==> console: npm ci, npm run build (when its sources changed)"
make --no-print-directory console
[[ -d console/node_modules/playwright-core ]] ||
  (cd console && npm ci --no-audit --no-fund --loglevel=error)

if [[ "${SKIP_CARGO_BUILD:-}" != 1 ]]; then
  echo "==> cargo build (gateway, launcher, services, token tool)"
  cargo build -p gateway-service -p bookmesh-launcher \
    -p book-service -p member-service -p rental-service -p bestbook-service -p bookmesh-token
fi

echo "==> console test against the mesh"
if [[ "${SKIP_CARGO_BUILD:-}" == 1 ]]; then
  export BOOKMESH_CONSOLE_DIR="$root/console/dist"
fi
export CHROMIUM="$chromium"
clients/with-mesh.sh node --test console/tests/
