#!/usr/bin/env bash
# How long a cluster takes to do what users do most, on the real control plane with kube-sim's
# default delays (a first image pull per node takes seconds, a sandbox starts in a second):
# create to Ready with 3 members, scale 1 → 3 and 3 → 1, stop 3 → 0 and wake 0 → 3. Each figure
# comes with a timeline of where the time went, read back from the API server: each member pod's
# creation, scheduling, init done, etcd started and Ready (the pods' own timestamps, to the
# second), and the operator's steps (its Events, to the microsecond). Peers' own CI figures for
# comparison: the official operator 1 → 3 in 30.2 s, 3 → 1 in 10.0 s; etcd-druid create to
# Ready in 3 min 43 s and wake 0 → 3 in ~97 s.
source "$(dirname "$0")/../e2e/lib.sh"
VERSION=${VERSION:-3.6.17}

figure() { echo "figure: $*"; }
now() { date +%s.%N; }
# until_true LIMIT COMMAND...: polls every 0.2 s (wait_for's 1 s would blur the figures).
until_true() {
  local limit=$1 start=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - start < limit )) || fail "timed out after ${limit}s: $*"
    sleep 0.2
  done
}
stopped() { [ "$(field "$1" '{.status.phase}')" = Stopped ]; }
# measure WHAT CLUSTER START: prints the figure and the timeline since START (epoch seconds).
measure() {
  local what=$1 cluster=$2 start=$3 took
  took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(now)")
  figure "$what: $took s"
  timeline "$cluster" "$start"
}
timeline() {
  local cluster=$1 start=$2
  kubectl get pods -l "app.kubernetes.io/instance=$cluster" -o json >"$WORK/pods.json"
  kubectl get events.events.k8s.io --field-selector "regarding.name=$cluster" -o json >"$WORK/events.json"
  python3 - "$start" "$WORK/pods.json" "$WORK/events.json" <<'PY'
import datetime, json, sys
start = float(sys.argv[1])
def at(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - start
rows = []
for pod in json.load(open(sys.argv[2]))["items"]:
    name = pod["metadata"]["name"]
    conditions = {c["type"]: c.get("lastTransitionTime") for c in pod["status"].get("conditions", [])}
    etcd = [c for c in pod["status"].get("containerStatuses", []) if c["name"] == "etcd"]
    running = etcd[0]["state"].get("running", {}).get("startedAt") if etcd else None
    for what, when in [("pod created", pod["metadata"]["creationTimestamp"]),
                       ("scheduled", conditions.get("PodScheduled")),
                       ("member-init done", conditions.get("Initialized")),
                       ("etcd started", running),
                       ("ready (etcd answering)", conditions.get("Ready"))]:
        t = at(when)
        if t is not None and t > -1:
            rows.append((t, f"{name}: {what}"))
for event in json.load(open(sys.argv[3]))["items"]:
    t = at(event.get("eventTime") or event.get("deprecatedLastTimestamp"))
    if t is not None and t > -1:
        rows.append((t, f"operator: {event['reason']}: {event.get('note', '')[:110]}"))
for t, what in sorted(rows):
    print(f"  {t:6.1f} s  {what}")
PY
}

install_operator
start=$(now)
create_cluster bench "3" "$VERSION" >/dev/null
until_true 600 running bench 3
measure "create to Ready, 3 members" bench "$start"

create_cluster scale 1 "$VERSION" >/dev/null
until_true 600 running scale 1
start=$(now)
kubectl scale etcdcluster/scale --replicas=3 >/dev/null
until_true 600 running scale 3
measure "scale 1 → 3 (Ready)" scale "$start"

start=$(now)
kubectl scale etcdcluster/scale --replicas=1 >/dev/null
until_true 600 running scale 1
measure "scale 3 → 1 (Ready)" scale "$start"

start=$(now)
kubectl scale etcdcluster/bench --replicas=0 >/dev/null
until_true 600 stopped bench
measure "stop 3 → 0" bench "$start"
start=$(now)
kubectl scale etcdcluster/bench --replicas=3 >/dev/null
until_true 600 running bench 3
measure "wake 0 → 3 (Ready)" bench "$start"
