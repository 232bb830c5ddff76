#!/usr/bin/env bash
# `make demo`: bring up the sandbox, install the CRDs, run the operator against the
# management cluster, apply the sample plan and show it turn Valid with its regions ready,
# then fail a seeded plan over and back (re-protection, approval).
# DEMO_KEEP=1 leaves the sandbox and operator running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${DROVER_CACHE:-$HOME/.cache/drover}"
PYTHON="$CACHE/venv/bin/python"
DEMO_DIR=target/demo
mkdir -p "$DEMO_DIR"

stage() { printf '\n==> %s\n' "$*"; }
operator_pid=""
cleanup() {
  if [ "${DEMO_KEEP:-}" = 1 ]; then
    echo "DEMO_KEEP=1: operator (PID $operator_pid) and sandbox left running; stop with"
    echo "  kill $operator_pid; make sandbox-down"
    return
  fi
  if [ -n "$operator_pid" ]; then kill -TERM "$operator_pid" 2>/dev/null || true; wait "$operator_pid" 2>/dev/null || true; fi
  "$PYTHON" e2e/sandbox.py down
}

stage "checking the sample plan offline: drover check -f config/samples/plan.yaml"
./target/debug/drover check -f config/samples/plan.yaml

stage "starting the sandbox: etcd + kube-apiserver for mgmt, use1, usw2; AWS emulator"
"$PYTHON" e2e/sandbox.py down >/dev/null
trap cleanup EXIT
"$PYTHON" e2e/sandbox.py up
# shellcheck disable=SC1091
source target/sandbox/env.sh

stage "installing the CRDs from crds/ into the management cluster"
kubectl create --validate=false -f crds/drover.io.yaml
kubectl wait --for=condition=Established --timeout=30s crd/disasterrecoveryplans.drover.io crd/failovers.drover.io

stage "starting the operator (log: $DEMO_DIR/operator.log)"
./target/debug/drover run --http-addr 127.0.0.1:18080 --lease-namespace drover-system \
  >"$DEMO_DIR/operator.log" 2>&1 &
operator_pid=$!
for _ in $(seq 1 300); do
  if curl -fsS 127.0.0.1:18080/readyz >/dev/null 2>&1; then break; fi
  kill -0 "$operator_pid" || { echo "operator exited; see $DEMO_DIR/operator.log"; exit 1; }
  sleep 0.1
done
echo "operator ready: $(curl -fsS 127.0.0.1:18080/readyz)"

stage "applying config/samples/plan.yaml"
kubectl apply -f config/samples/plan.yaml

stage "waiting for the plan's status"
last=""
for _ in $(seq 1 300); do
  line=$(kubectl -n drover-system get drp shop -o jsonpath='Valid={.status.conditions[?(@.type=="Valid")].status} Ready={.status.conditions[?(@.type=="Ready")].status} active={.status.activeRegion} regions={range .status.regions[*]}{.name}:{.ready} {end}')
  if [ "$line" != "$last" ]; then echo "plan shop: $line"; last=$line; fi
  case "$line" in *"Valid=True Ready="[TF]*"use1:true usw2:true "*) break;; esac
  sleep 0.2
done
kubectl -n drover-system get drp shop
case "$last" in *"Valid=True"*"use1:true usw2:true "*) ;; *) echo "plan did not become Valid with both regions ready"; exit 1;; esac
# The sample's databases do not exist in the sandbox, so Ready says no failback is
# possible and why; the seeded plan below has real ones.
echo "Ready: $(kubectl -n drover-system get drp shop -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}')"

stage "a broken plan is reported by field (negative replicas, bad duration)"
sed -e 's/name: shop$/name: broken/' -e 's/rpo: 30s/rpo: half a minute/' -e 's/activeReplicas: 4/activeReplicas: -4/' \
  config/samples/plan.yaml | kubectl apply -f -
for _ in $(seq 1 100); do
  msg=$(kubectl -n drover-system get drp broken -o jsonpath='{.status.conditions[?(@.type=="Valid")].message}')
  [ -n "$msg" ] && break
  sleep 0.2
done
echo "plan broken: Valid=False: $msg"
kubectl -n drover-system get events --field-selector reason=InvalidPlan \
  -o custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message

stage "seeding a scenario plan 'demo' (e2e/seed.py --postgres --probes): 2 RDS on real PostgreSQL + 1 Aurora global, 4 DNS records, 6 workloads, probes per region"
# Real writers commit rows into the PostgreSQL behind each RDS instance while their pods
# are ready; each region's probes follow its writer, its database and the api record.
"$PYTHON" e2e/seed.py demo --postgres --probes > "$DEMO_DIR/demo-plan.json"
kubectl apply -f "$DEMO_DIR/demo-plan.json"
for _ in $(seq 1 300); do
  ready=$(kubectl -n drover-system get drp demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  [ "$ready" = True ] && break
  sleep 0.2
done
kubectl -n drover-system get drp demo
[ "$ready" = True ] || { echo "the seeded plan did not become Ready"; exit 1; }

stage "the plan re-protects its RDS standbys itself (spec.reprotection.rds: Recreate)"
kubectl -n drover-system patch drp demo --type merge -p '{"spec":{"reprotection":{"rds":"Recreate"}}}'

stage "planned failover use1 → usw2: drover failover --plan demo --to usw2 --watch"
./target/debug/drover failover -n drover-system --plan demo --to usw2 --watch

stage "re-protection: the old primaries in use1 are renamed aside, replicas of usw2 created"
# Ready=True from before the failover is stale: wait for use1's standbys to be Protected.
protected=""
for _ in $(seq 1 600); do
  states=$(kubectl -n drover-system get drp demo \
    -o jsonpath='{range .status.replication[*]}{.region}:{.protection} {end}{.status.conditions[?(@.type=="Ready")].status}')
  case "$states" in
    *usw2:*|*Unprotected*|*Reprotecting*) ;;
    "use1:Protected use1:Protected use1:Protected True") protected=yes; break;;
  esac
  sleep 0.2
done
kubectl -n drover-system get drp demo \
  -o jsonpath='{range .status.replication[*]}{.database} in {.region}: {.protection}{"\n"}{end}'
kubectl -n drover-system get events --field-selector reason=Reprotected \
  -o custom-columns=REASON:.reason,MESSAGE:.message
[ "$protected" = yes ] || { echo "the standbys were not re-protected: $states"; exit 1; }

stage "failback usw2 → use1: no hand-run step; it waits for approval (the plan's default)"
# A failback waits for approval (the plan's default): it runs its preflight, then waits.
./target/debug/drover failover -n drover-system --plan demo --to use1 --mode Planned --watch \
  > "$DEMO_DIR/failback.log" 2>&1 &
watch_pid=$!
fo=""
for _ in $(seq 1 300); do
  fo=$(kubectl -n drover-system get failovers \
    -o jsonpath='{range .items[?(@.status.phase=="AwaitingApproval")]}{.metadata.name}{end}')
  [ -n "$fo" ] && break
  sleep 0.2
done
[ -n "$fo" ] || { echo "the failback did not reach AwaitingApproval"; cat "$DEMO_DIR/failback.log"; exit 1; }
kubectl -n drover-system get failover "$fo" \
  -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,WHY:.status.approval.reason,DEADLINE:.status.approval.deadline

stage "an approver approves it: drover approve $fo"
./target/debug/drover approve "$fo" -n drover-system
wait "$watch_pid"
cat "$DEMO_DIR/failback.log"

stage "the game day: each failover's orchestration and user-visible RTO, the estimated data loss, and the rows the bed counted lost"
mapfile -t demo_failovers < <(kubectl -n drover-system get failovers --sort-by=.metadata.creationTimestamp \
  -o jsonpath='{range .items[?(@.spec.planRef=="demo")]}{.metadata.name}{"\n"}{end}')
"$PYTHON" e2e/gameday_table.py --namespace drover-system demo "${demo_failovers[@]}"

stage "done: drover status -n drover-system"
kubectl -n drover-system get failovers
./target/debug/drover status -n drover-system
