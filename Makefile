# Drover: the two set-up commands are `make demo` and `make test`.
# Both install what they need (apt, pip, cargo) and reuse caches under ~/.cache/drover.

SHELL := /bin/bash
CACHE ?= $(or $(DROVER_CACHE),$(HOME)/.cache/drover)
PYTHON := $(CACHE)/venv/bin/python
export DROVER_CACHE := $(CACHE)

.PHONY: deps build demo test bench bench-scale bench-steady unit e2e sandbox-up sandbox-down crds rules argocd fmt lint

deps:
	bash e2e/install-deps.sh

build:
	cargo build

demo: deps build
	bash e2e/demo.sh

test: deps
	bash e2e/run-tests.sh

# Failover benchmark (see BENCHMARKS.md) of the release build, as the image ships it;
# a fresh sandbox, stopped afterwards.
bench: deps build
	cargo build --release
	$(PYTHON) e2e/sandbox.py down >/dev/null
	$(PYTHON) e2e/sandbox.py up
	$(PYTHON) e2e/bench.py --runs $(or $(RUNS),3) $(if $(LEARN),--learn) --binary $(or $(BINARY),target/release/drover); status=$$?; $(PYTHON) e2e/sandbox.py down; exit $$status

# Mass failover (issue 11): one plan alone, then PLANS plans at once (default 50), on a
# fresh sandbox; prints wall times and AWS calls per service for BENCHMARKS.md.
bench-scale: deps build
	$(PYTHON) e2e/sandbox.py down >/dev/null
	$(PYTHON) e2e/sandbox.py up
	source target/sandbox/env.sh && DROVER_MASS_PLANS=$(or $(PLANS),50) cargo test --test e2e -- --nocapture --ignored --exact scale::many_plans_fail_over_at_once_within_the_route53_limit; status=$$?; $(PYTHON) e2e/sandbox.py down; exit $$status

# Steady state (issue 11): PLANS plans (default 200) x 50 workloads x 3 clusters, Ready and
# re-checked every 60 s, one release-build operator; prints its RSS, CPU, API requests and
# AWS calls per minute for BENCHMARKS.md.
bench-steady: deps build
	cargo build --release
	$(PYTHON) e2e/sandbox.py down >/dev/null
	$(PYTHON) e2e/sandbox.py up
	$(PYTHON) e2e/bench_steady.py --plans $(or $(PLANS),200) --binary $(or $(BINARY),target/release/drover); status=$$?; $(PYTHON) e2e/sandbox.py down; exit $$status

# Writes the chart's and kustomize's copies of config/prometheus/drover-rules.yaml.
rules:
	$(PYTHON) e2e/rules.py

unit:
	cargo test --lib --bins

sandbox-up: deps build
	$(PYTHON) e2e/sandbox.py up

sandbox-down:
	$(PYTHON) e2e/sandbox.py down

crds:
	cargo run -q -- crds > crds/drover.io.yaml
	cp crds/drover.io.yaml charts/drover/crds/drover.io.yaml
	cp crds/drover.io.yaml config/crd/drover.io.yaml

argocd:
	python3 e2e/argocd_cm.py > config/argocd/argocd-cm-patch.yaml

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
