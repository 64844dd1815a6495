#!/usr/bin/env bash
# mayfly's whole check, as CI runs it: formatting, lints, the infra template, and every test.
# It installs what it needs itself (a project-local virtualenv with the emulator and linters),
# so a fresh machine needs only the Rust toolchain and Python.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*" >&2; }

step "Installing test tools (moto, awscli, cfn-lint, shellcheck, checkov) into .venv"
bash scripts/emulator.sh install
export PATH="$repo/.venv/bin:$PATH"

if [[ ! -x /usr/bin/chromium && "$(id -u)" == 0 ]]; then
  step "Installing chromium (the cost report's HTML is checked in a headless browser)"
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "shellcheck scripts"
shellcheck scripts/*.sh .ci/run

if compgen -G "infra/*.yaml" >/dev/null; then
  step "cfn-lint infra"
  cfn-lint infra/*.yaml
  step "checkov infra (each remaining finding is suppressed in the template with its reason)"
  bash scripts/emulator.sh checkov
fi

# With the `lambda` feature, so the mayfly-lambda binary and its test are linted and run too
# (the feature only adds them: everything else is the same code as the default build).
step "cargo clippy (all targets, the lambda feature, warnings are errors)"
cargo clippy --workspace --all-targets --features lambda --locked -- -D warnings

step "Starting the emulator (moto) for the emulator tests"
# One emulator for the whole run; each test uses its own deployment name. It is stopped on
# exit, however the run ends.
MAYFLY_TEST_ENDPOINT="$(MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true bash scripts/emulator.sh start)"
export MAYFLY_TEST_ENDPOINT
trap 'bash scripts/emulator.sh stop >/dev/null 2>&1 || true' EXIT

step "cargo test (with the lambda feature)"
cargo test --workspace --features lambda --locked
