#!/usr/bin/env bash
# A rolling upgrade 3.4.23 → 3.5.1 under a writer, with a scale 3 → 5 in the middle of it:
# members move one at a time, a quorum of them ready throughout, every member ends on 3.5.1, and
# every acknowledged write is there afterwards.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.4.23 >/dev/null
wait_running demo 3
writer_start demo
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
writer_check demo
log "PASS"
