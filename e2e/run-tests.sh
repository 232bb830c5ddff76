#!/usr/bin/env bash
# `make test`: lint, unit tests, then the e2e suite against a fresh sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${DROVER_CACHE:-$HOME/.cache/drover}"
PYTHON="$CACHE/venv/bin/python"

step() { printf '\n==> %s\n' "$*"; }

step "format and lint"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "unit tests"
cargo test --lib --bins

step "build e2e tests"
cargo test --test e2e --no-run

step "start sandbox"
"$PYTHON" e2e/sandbox.py down >/dev/null
trap '"$PYTHON" e2e/sandbox.py down' EXIT
"$PYTHON" e2e/sandbox.py up
# shellcheck disable=SC1091
source target/sandbox/env.sh

step "e2e tests"
cargo test --test e2e -- --nocapture

step "e2e: management API server restart (alone, it restarts the shared server)"
cargo test --test e2e -- --nocapture --ignored --exact failover::survives_a_management_api_server_restart

step "e2e: many plans failing over at once (alone, it needs the account's Route 53 limit to itself)"
cargo test --test e2e -- --nocapture --ignored --exact scale::many_plans_fail_over_at_once_within_the_route53_limit

step "AWS emulator extension tests"
"$CACHE/venv/bin/python" -m pytest -q e2e/test_awsbed.py e2e/test_awsbed_route53.py e2e/test_awsbed_health.py \
  e2e/test_awsbed_replication.py e2e/test_nodesim.py e2e/test_chart.py e2e/test_iam.py \
  e2e/test_cel.py e2e/test_rules.py e2e/test_awsbed_postgres.py e2e/test_awsbed_rds_postgres.py \
  e2e/test_awsbed_app.py
