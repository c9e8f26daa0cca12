#!/usr/bin/env bash
# The operator at scale on kube-sim: its memory idle and with CLUSTERS (default 100) EtcdClusters of
# one member each, the time they take to come up, reconcile latency, and what a steady state costs
# (API requests per reconcile, counted in kube-apiserver's own audit log, and CPU). Prints one "figure:" line per measurement.
source "$(dirname "$0")/../e2e/lib.sh"
N=${CLUSTERS:-100}
STEADY=${STEADY_SECONDS:-120}
OPERATOR=system:serviceaccount:$SYSTEM:etcd-operator
AUDIT=${KUBE_SIM_AUDIT:?kube-sim sets KUBE_SIM_AUDIT}

figure() { echo "figure: $*"; }

install_operator
leader=$(leader_pod)
follower=$(kubectl -n "$SYSTEM" get pods -o name | sed 's|pod/||' | grep -v "^$leader$" | head -1)
pid_of() {
  kubectl -n "$SYSTEM" get pod "$1" -o jsonpath='{.status.containerStatuses[?(@.name=="operator")].containerID}' | sed 's|kube-sim://||'
}
LEADER_PID=$(pid_of "$leader")
FOLLOWER_PID=$(pid_of "$follower")
[ -n "$LEADER_PID" ] && [ -d "/proc/$LEADER_PID" ] || fail "cannot find the leader's process ($leader)"
# status FIELD PID: a VmRSS/VmHWM/RssAnon figure in MiB.
status() { awk -v f="$1:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$2/status"; }
# rss PID: resident memory, and the part of it that is the process's own (anonymous); the rest
# is pages of the binary mapped from the page cache, shared by the replicas on a node.
rss() { echo "$(status VmRSS "$1") MiB (anonymous $(status RssAnon "$1") MiB)"; }
# CPU seconds (user + system) the process has used.
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
# operator_requests: API requests the operator made so far for its clusters: watches (they stay
# open) and leader election's Lease renewals (one replica's, not a cluster's) excepted.
operator_calls() { grep -F "\"username\":\"$OPERATOR\"" "$AUDIT" | grep -v '"verb":"watch"' | grep -v '"resource":"leases"'; }
operator_requests() { operator_calls | wc -l; }
scrape() { curl -sfk "https://$(kubectl -n "$SYSTEM" get pod "$leader" -o jsonpath='{.status.podIP}'):9443/metrics"; }
reconciles() { scrape | awk '/^etcd_operator_reconciles_total\{controller="etcdcluster"\}/ {print $2}'; }
# quantiles BEFORE AFTER: p50 and p99 of the etcdcluster reconcile durations observed between two
# scrapes, interpolated within histogram buckets as Prometheus' histogram_quantile does.
quantiles() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    out = {}
    for line in open(path):
        if line.startswith("etcd_operator_reconcile_duration_seconds_bucket{") and 'controller="etcdcluster"' in line:
            out[float(re.search(r'le="([^"]+)"', line).group(1))] = float(line.split()[-1])
    return out
before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
bounds = sorted(after)
counts = [after[b] - before.get(b, 0) for b in bounds]
total = counts[-1]
def q(p):
    rank, prev_bound, prev_count = p * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
print(f"{q(0.5) * 1000:.1f} {q(0.99) * 1000:.1f} {int(total)}")
PY
}

sleep 20
figure "operator RSS idle, no cluster: leader $(rss "$LEADER_PID"), follower $(rss "$FOLLOWER_PID")"

scrape >"$WORK/metrics-0"
start=$SECONDS
for i in $(seq -w 1 "$N"); do
  printf -- '---\napiVersion: etcd.etcd.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: c%s\nspec:\n  size: 1\n  version: "3.5.1"\n' "$i"
done | kubectl apply -f - >/dev/null
all_running() {
  [ "$(kubectl get etcdclusters -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Running$')" = "$N" ]
}
wait_for "all $N clusters Running" 1200 all_running
came_up=$((SECONDS - start))
scrape >"$WORK/metrics-1"
read -r p50 p99 count < <(quantiles "$WORK/metrics-0" "$WORK/metrics-1")
figure "$N clusters of 1 member Running ${came_up}s after one kubectl apply"
figure "reconcile latency while they came up: p50 $p50 ms, p99 $p99 ms ($count reconciles)"
figure "operator peak RSS while they came up: leader $(status VmHWM "$LEADER_PID") MiB"

# Steady state: nothing changes; what remains is each cluster's periodic health check.
sleep 60
scrape >"$WORK/metrics-2"
requests0=$(operator_requests) reconciles0=$(reconciles) cpu0=$(cpu "$LEADER_PID")
sleep "$STEADY"
requests1=$(operator_requests) reconciles1=$(reconciles) cpu1=$(cpu "$LEADER_PID")
scrape >"$WORK/metrics-3"
read -r p50 p99 count < <(quantiles "$WORK/metrics-2" "$WORK/metrics-3")
requests=$((requests1 - requests0))
reconciled=$(python3 -c "print(int($reconciles1 - $reconciles0))")
[ "$reconciled" -gt 0 ] || fail "no reconcile in ${STEADY}s of steady state"
figure "steady state with $N clusters, ${STEADY}s: $reconciled reconciles, $requests API requests by the operator (watches and Lease renewals excepted), by verb and resource:"
figure "API requests per reconcile at steady state: $(python3 -c "print(f'{$requests / $reconciled:.2f}')")"
# Each cluster is looked at on its 30 s health check and when something it owns changes; at steady
# state nothing changes, so about 2 a minute. More means reconciles waking each other (a storm).
per_minute=$(python3 -c "print(f'{$reconciled / $N / ($STEADY / 60):.2f}')")
figure "reconciles per cluster per minute at steady state: $per_minute (its 30 s health check alone: 2)"
python3 -c "import sys; sys.exit($per_minute > 2.5)" || fail "$per_minute reconciles per cluster per minute: something wakes idle clusters"
figure "reconcile latency at steady state: p50 $p50 ms, p99 $p99 ms"
figure "operator CPU at steady state: $(python3 -c "print(f'{($cpu1 - $cpu0) / $STEADY * 100:.1f}')")% of one core"
figure "operator RSS with $N clusters: leader $(rss "$LEADER_PID"), peak $(status VmHWM "$LEADER_PID") MiB; follower $(rss "$FOLLOWER_PID")"
operator_calls | sed -n "$((requests0 + 1)),${requests1}p" | python3 -c '
import collections, json, sys
counts = collections.Counter()
for line in sys.stdin:
    e = json.loads(line)
    o = e["objectRef"]
    counts[(e["verb"], o["resource"] + ("/" + o["subresource"] if "subresource" in o else ""))] += 1
for (verb, resource), n in counts.most_common():
    print(f"figure:   {n:6d} {verb} {resource}")'
# Every figure is of the two processes measured from the start: a restarted operator (a failed
# liveness probe while the clusters come up, say) would make them another process's.
restarts=$(kubectl -n "$SYSTEM" get pods -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' | awk '{s += $1} END {print s + 0}')
[ "$restarts" = 0 ] || fail "an operator container restarted during the run ($restarts restarts): the figures are not of one process"
log "PASS"
