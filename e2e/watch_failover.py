#!/usr/bin/env python3
"""Creates a Failover and prints its steps live, one line per step with its duration.

    watch_failover.py PLAN TARGET [--mode Planned|Unplanned|DryRun] [--namespace NS]

Exits 0 only if the failover Succeeded.
"""

import argparse
import json
import subprocess
import sys
import time

TERMINAL = {"Succeeded", "Failed", "RolledBack", "Rejected"}
MARK = {"Succeeded": "ok  ", "Skipped": "skip", "Failed": "FAIL"}


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, text=True, check=True,
                          capture_output=True).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("plan")
    parser.add_argument("target")
    parser.add_argument("--mode", default="Planned")
    parser.add_argument("--namespace", default="drover-system")
    args = parser.parse_args()
    name = f"{args.plan}-to-{args.target}-{int(time.time())}"
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "drover.io/v1alpha1", "kind": "Failover",
        "metadata": {"name": name, "namespace": args.namespace},
        "spec": {"planRef": args.plan, "targetRegion": args.target, "mode": args.mode}}))
    print(f"failover {name}: {args.mode} to {args.target}")
    printed, running_shown = set(), set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = json.loads(kubectl("-n", args.namespace, "get", "failover", name, "-o", "json")).get("status", {})
        for step in status.get("steps", []):
            state = step.get("state")
            if state in MARK and step["name"] not in printed:
                printed.add(step["name"])
                secs = step.get("durationSeconds") or 0.0
                print(f"  {MARK[state]} {step['name']:<17} {secs:6.2f}s  {(step.get('message') or '')[:110]}",
                      flush=True)
            elif state == "Running" and step["name"] not in running_shown:
                running_shown.add(step["name"])
                print(f"  ...  {step['name']:<17} running", flush=True)
        if status.get("phase") in TERMINAL:
            rto = (status.get("timings") or {}).get("totalSeconds") or 0.0
            loss = (status.get("dataLoss") or {}).get("maxLagSeconds")
            active = kubectl("-n", args.namespace, "get", "drp", args.plan, "-o", "jsonpath={.status.activeRegion}")
            print(f"  phase {status['phase']}; measured RTO {rto:.2f}s; "
                  f"data-loss estimate {loss if loss is not None else 'n/a'}s; active region {active}")
            sys.exit(0 if status["phase"] == "Succeeded" else 1)
        time.sleep(0.2)
    sys.exit(f"failover {name} did not finish in 10 minutes")


if __name__ == "__main__":
    main()
