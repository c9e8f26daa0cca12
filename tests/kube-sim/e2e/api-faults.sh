#!/usr/bin/env bash
# An unreliable API server, under a writer: one in twenty of the operator's requests fails with
# 500 and the real kube-apiserver restarts every 30 s (every watch dropped, its caches rebuilt,
# several seconds without an endpoint behind the kubernetes Service each time), while
# the operator's leader is killed and the cluster scales 3 → 5 → 3. Transient failures are retried: the cluster converges both ways without
# any help, is never reported Failed, and no acknowledged write is lost.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.1 >/dev/null
wait_running demo 3
cluster_id=$(field demo '{.status.clusterID}')
writer_start demo

fault fail "permille=50"
# The API server restarts every 30 s for as long as the scenario runs; each outage is logged
# (a loaded machine stretches one from a few seconds to a minute).
(while :; do
  sleep 30
  away=$(kube-sim fault restart-apiserver 2>&1) || true
  log "kube-apiserver restarted: $away"
done) &
RESTARTS=$!
phases() {
  local phase
  phase=$(field demo '{.status.phase}' 2>/dev/null) || return 0
  [ "$phase" != Failed ] || fail "a transient API failure was reported as phase Failed"
}
# kubectl itself meets the restarts too: try again for as long as an outage can last.
retry() {
  local start=$SECONDS
  until "$@"; do
    (( SECONDS - start < 180 )) || fail "failed for 180s: $*"
    sleep 2
  done
}
converge() {
  local size=$1 start=$SECONDS
  until running demo "$size" >/dev/null 2>&1; do
    (( SECONDS - start < 600 )) || fail "did not converge to $size members in 600s with the API failing"
    phases
    sleep 1
  done
  log "converged to $size members in $((SECONDS - start))s with the API failing"
}
# The replica that takes over starts up against the failing API server.
retry fault kill "pod=$SYSTEM/$(retry leader_pod)" "container=operator"
retry kubectl scale etcdcluster/demo --replicas=5 >/dev/null
converge 5
retry kubectl scale etcdcluster/demo --replicas=3 >/dev/null
converge 3
kill "$RESTARTS"
wait "$RESTARTS" 2>/dev/null || true
sleep 2
fault fail "permille=0"
writer_check demo
[ "$(field demo '{.status.clusterID}')" = "$cluster_id" ] || fail "the cluster ID changed"
log "PASS"
