#!/usr/bin/env bash
# kubectl drain of the nodes that hold members, one after the other as a node upgrade does, under
# a writer, in a namespace with a ResourceQuota (every container must name its requests): the eviction API honours the operator's PodDisruptionBudget (one member at a time;
# the second drain waits until the first member is back and ready), each drain completes, a
# quorum is ready throughout and every acknowledged write is read back.
source "$(dirname "$0")/lib.sh"
install_operator
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute}
spec: {hard: {requests.cpu: "4", requests.memory: 8Gi}}
YAML
create_cluster demo 3 3.5.36 >/dev/null
wait_running demo 3
writer_start demo
ready_members() {
  kubectl get pods -l app.kubernetes.io/instance=demo -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true
}
# Running is etcd's view; the pods' readiness probes follow within a probe period. The watcher
# starts from three ready pods, so that what it records is what the drains did.
all_ready() { [ "$(ready_members)" = 3 ]; }
wait_for "all three member pods ready" 60 all_ready
# A watcher that records the fewest ready members it ever saw.
(
  lowest=3
  while [ ! -f "$WORK/stop-watch" ]; do
    n=$(ready_members 2>/dev/null) || n=$lowest
    (( n < lowest )) && lowest=$n && echo "$lowest" >"$WORK/lowest"
    sleep 0.5
  done
) &
WATCH=$!
echo 3 >"$WORK/lowest"
for member in demo-1 demo-2; do
  node=$(kubectl get pod "$member" -o jsonpath='{.spec.nodeName}')
  start=$SECONDS
  kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --timeout=300s >"$WORK/drain-$node.log" 2>&1 ||
    fail "kubectl drain $node did not complete: $(tail -5 "$WORK/drain-$node.log")"
  log "drained $node ($member) in $((SECONDS - start))s"
  back() {
    [ "$(kubectl get pod "$member" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
      [ "$(kubectl get pod "$member" -o jsonpath='{.spec.nodeName}')" != "$node" ]
  }
  wait_for "$member ready again on another node" 300 back
  wait_running demo 3 300
done
grep -q 'Cannot evict pod as it would violate the pod.s disruption budget' "$WORK"/drain-*.log &&
  log "the disruption budget held an eviction back until a member was ready again" || true
touch "$WORK/stop-watch"
wait "$WATCH" || true
lowest=$(cat "$WORK/lowest")
(( lowest >= 2 )) || fail "only $lowest members were ready during the drains"
log "at least $lowest members ready throughout"
writer_check demo
log "PASS"
