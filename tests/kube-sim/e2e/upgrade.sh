#!/usr/bin/env bash
# A rolling upgrade 3.4.23 → 3.5.1 under a writer: members move one at a time, a quorum of
# them ready throughout, and every acknowledged write is there afterwards.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.4.23 >/dev/null
wait_running demo 3
writer_start demo
kubectl patch etcdcluster demo --type merge -p '{"spec": {"version": "3.5.1"}}' >/dev/null
upgraded() {
  [ "$(field demo '{.status.members[*].version}')" = "3.5.1 3.5.1 3.5.1" ] && running demo 3
}
start=$SECONDS
lowest=3
until upgraded >/dev/null 2>&1; do
  (( SECONDS - start < 600 )) || fail "the upgrade did not finish in 600s"
  ready=$(field demo '{.status.readyReplicas}')
  (( ready < lowest )) && lowest=$ready
  (( ready >= 2 )) || fail "only $ready members ready during the upgrade"
  sleep 1
done
log "upgraded to 3.5.1 in $((SECONDS - start))s; at least $lowest members ready throughout"
[ "$(kubectl get pod demo-0 -o jsonpath='{.spec.containers[0].image}')" = gcr.io/etcd-development/etcd:v3.5.1 ] || fail "demo-0 does not run the 3.5.1 image"
writer_check demo
log "PASS"
