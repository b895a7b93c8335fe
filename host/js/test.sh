#!/usr/bin/env bash
# The JavaScript package's whole test, as tests/run-all.sh runs it: install the npm dependencies
# (jco, workerd), build the policy component from the workspace and transpile it with jco
# (scripts/build.mjs; nothing built is committed), then node's own test runner — parity with the
# native core (expected values from `cargo run -p ricochet-core --example parity_vectors`, in
# this run), retryFetch against loopback servers, and the Worker under `workerd serve`.
set -euo pipefail
cd "$(dirname "$0")"

echo "== npm ci"
npm ci --no-audit --no-fund

echo "== build the engine (the policy component, transpiled by jco)"
npm run --silent build

echo "== the type declarations (tsc --noEmit)"
node_modules/.bin/tsc --noEmit --strict --module nodenext --moduleResolution nodenext --target es2022 --lib es2022,dom test/types.ts

echo "== node --test"
node --test test/*.test.js
