#!/usr/bin/env bash
# A rolling upgrade 3.4.23 → 3.5.1 under a writer, with a scale 3 → 5 in the middle of it:
# members move one at a time, a quorum of them ready throughout, none stopped while it leads,
# every member ends on 3.5.1, and every acknowledged write is there afterwards.
source "$(dirname "$0")/lib.sh"
rm -f "$WORK/stop-sampler" "$WORK/samples"
install_operator
create_cluster demo 3 3.4.23 >/dev/null
wait_running demo 3
writer_start demo
# etcd's own view of the three members being rolled, every ~0.3 s: when the sample began, who
# answers, on which version, and who leads.
(
  endpoints=https://demo-0.demo.default.svc:2379,https://demo-1.demo.default.svc:2379,https://demo-2.demo.default.svc:2379
  while [ ! -f "$WORK/stop-sampler" ]; do
    started=$(date +%s.%N)
    { ETCDCTL_API=3 etcdctl --endpoints "$endpoints" --dial-timeout=300ms --command-timeout=1s \
        --cacert "$WORK/certs-demo/ca.crt" --cert "$WORK/certs-demo/tls.crt" --key "$WORK/certs-demo/tls.key" \
        endpoint status -w json 2>/dev/null || true; } | python3 -c '
import json, sys
text = sys.stdin.read().strip() or "[]"
rows = json.loads(text)
name = lambda row: row["Endpoint"].split("//")[1].split(".")[0]
ids = {row["Status"]["header"]["member_id"]: name(row) for row in rows}
leaders = {row["Status"]["leader"] for row in rows}
leader = next((ids[l] for l in leaders if l in ids), None)
print(json.dumps({"t": float(sys.argv[1]), "up": {name(r): r["Status"]["version"] for r in rows}, "leader": leader}))
' "$started" >>"$WORK/samples"
    sleep 0.2
  done
) &
SAMPLER=$!
kubectl patch etcdcluster demo --type merge -p '{"spec": {"version": "3.5.1"}}' >/dev/null
# A scale in the middle of the roll (the webhook refuses both in one update, but `kubectl scale`
# is a second update): the operator sequences them, the roll pausing while membership changes.
wait_for "the first member on 3.5.1" 120 bash -c "kubectl get etcdcluster demo -o jsonpath='{.status.members[*].version}' | grep -q 3.5.1"
kubectl scale etcdcluster/demo --replicas=5 >/dev/null
upgraded() {
  [ "$(field demo '{.status.members[*].version}')" = "3.5.1 3.5.1 3.5.1 3.5.1 3.5.1" ] && running demo 5
}
start=$SECONDS
lowest=3
until upgraded >/dev/null 2>&1; do
  (( SECONDS - start < 600 )) || fail "the upgrade did not finish in 600s"
  # One read of the status, so that the figures agree with each other.
  read -r phase ready voters < <(field demo '{.status.phase} {.status.readyReplicas} {.status.members[?(@.role=="Voter")].name}' | awk '{print $1, $2, NF - 2}')
  (( ready < lowest )) && lowest=$ready
  (( ready >= voters / 2 + 1 )) || fail "only $ready of $voters voters ready during the upgrade"
  [ "$phase" != Recovering ] || fail "phase Recovering during a planned upgrade"
  sleep 1
done
log "upgraded to 3.5.1 and scaled to 5 in $((SECONDS - start))s; at least $lowest members ready throughout"
[ "$(kubectl get pod demo-0 -o jsonpath='{.spec.containers[0].image}')" = gcr.io/etcd-development/etcd:v3.5.1 ] || fail "demo-0 does not run the 3.5.1 image"
no_restart_events "during a planned upgrade"
touch "$WORK/stop-sampler"
wait "$SAMPLER" || true
# No member was stopped while it led: one that stops answering (for two samples running) was
# not the leader in the sample before. Only samples begun less than a second apart can tell: a
# hand-over and the next reconcile's roll fit in a longer gap (a loaded machine slows the sampler).
python3 - "$WORK/samples" <<'PY' || fail "a member was stopped for the roll while it led"
import json, sys
samples = [json.loads(line) for line in open(sys.argv[1])]
assert len(samples) > 20, f"only {len(samples)} samples"
judged = 0
for before, now, after in zip(samples, samples[1:], samples[2:]):
    for name, version in before["up"].items():
        if name in now["up"] or name in after["up"]:
            continue
        if now["t"] - before["t"] > 1.0:
            continue
        judged += 1
        if before["leader"] == name:
            sys.exit(f"{name} stopped while it led: {before} then {now}")
assert judged > 0, "no member was seen stopping within a second of the sample before: no verdict"
print(f"{len(samples)} samples of etcd's own status: {judged} stops seen, none while it led", file=sys.stderr)
PY
log "leadership hand-overs before a leader's pod rolled: $(kubectl get events --field-selector reason=MoveLeader -o name | wc -l)"
writer_check demo
log "PASS"
