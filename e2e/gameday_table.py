#!/usr/bin/env python3
"""Prints the game-day table of a seeded plan's failovers (issue 13): orchestration RTO and
user-visible RTO from each Failover's status, Drover's data-loss estimate, and the data
actually lost, counted by the bed as the old region's writers' acknowledged rows missing
from the promoted databases (seed.py --postgres).

    gameday_table.py --namespace NS PLAN FAILOVER [FAILOVER...]
"""

import argparse
import json
import subprocess
import sys
import urllib.request
from datetime import datetime

from seed import ENDPOINT, RDS_DBS, REGIONS, bed


def failover(namespace, name):
    out = subprocess.run(["kubectl", "-n", namespace, "get", "failover", name, "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def parse_time(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def writer_at(region, identifier, started, after=False):
    """The bed's writer of `identifier` in `region` around a failover's start: the newest
    started before it (the old region's), or with `after` the first started after it (the
    one on the promoted database). Re-protection may have renamed its instance aside since
    (IDENTIFIER-old-...): the bed's writers follow renames, so its identifier is the
    instance's name now."""
    with urllib.request.urlopen(f"{ENDPOINT}/_bed/writers", timeout=5) as r:
        writers = json.load(r)["writers"]
    candidates = [w for w in writers if w["region"] == region and w["identifier"].startswith(identifier)
                  and w["first_ack"] is not None]
    if started is None:
        return None
    if after:
        return min((w for w in candidates if w["first_ack"] >= started), key=lambda w: w["first_ack"],
                   default=None)
    return max((w for w in candidates if w["first_ack"] < started), key=lambda w: w["first_ack"],
               default=None)


def seconds(value):
    return "-" if value is None else f"{value:.2f} s"


def row(plan, fo):
    spec, status = fo["spec"], fo.get("status", {})
    source, target = status.get("sourceRegion"), spec["targetRegion"]
    rto = (status.get("timings") or {}).get("totalSeconds")
    users = status.get("userVisible") or {}
    user_visible = seconds(users.get("recoverySeconds"))
    if users.get("stoppedBeforeFirstPoll"):
        user_visible += " (down before the first poll)"
    elif users.get("recoverySeconds") is None and users.get("message"):
        user_visible += f" ({users['message']})"
    loss = status.get("dataLoss") or {}
    estimate = loss.get("estimatedSeconds", loss.get("maxLagSeconds"))
    estimated = seconds(estimate)
    if loss.get("unknownLagDatabases"):
        estimated = f"about {estimated}"
    started = parse_time((status.get("timings") or {}).get("startedAt"))
    measured = []
    for db in RDS_DBS:
        writer = writer_at(REGIONS[source], f"{plan}-{db}-{source}", started)
        if writer is None:  # seeded without --postgres
            measured.append(f"{db} not counted (no real writer)")
            continue
        promoted = writer_at(REGIONS[target], f"{plan}-{db}-{target}", started, after=True)
        promoted = promoted["identifier"] if promoted else f"{plan}-{db}-{target}"
        lost = bed("/writers/lost", {"writer": [writer["region"], writer["identifier"]],
                                     "in": [REGIONS[target], promoted]})
        measured.append(f"{db} {lost['lost']} of {lost['acked']} rows ({lost['lost_seconds']} s)")
    return (f"| {spec['mode']} {source} → {target} | {seconds(rto)} | {user_visible} | {estimated} "
            f"| {'; '.join(measured)} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", default="drover-system")
    parser.add_argument("plan")
    parser.add_argument("failovers", nargs="+")
    args = parser.parse_args()
    print("| failover | orchestration RTO | user-visible RTO | estimated data loss | measured data loss |")
    print("|---|---|---|---|---|")
    for name in args.failovers:
        print(row(args.plan, failover(args.namespace, name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
