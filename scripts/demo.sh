#!/usr/bin/env bash
# mayfly's demo: validate the example payer profiles and plan the example workload offline.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo build --quiet --bin mayfly
mayfly="$repo/target/debug/mayfly"

printf '\n==> Validating the example payer profiles\n' >&2
"$mayfly" payers validate payer-profiles

printf '\n==> Planning the example workload (no AWS needed)\n' >&2
"$mayfly" plan --profiles payer-profiles --jobs payer-profiles/examples/jobs.jsonl --launch-budget 5
