#!/usr/bin/env bash
# A member's volume comes back empty under a writer: a node's local disk replaced while its pod
# runs, then the pod restarted; and a member of an ephemeral cluster drained. etcd would start
# such a member with `existing` under its old ID, with no log, term or vote, and let it vote at
# once. Instead member-init refuses to start it (it had been a voter), and the operator removes
# it and adds it again under a new ID. replaceUnhealthyAfterSeconds is far away, so that only
# this path can replace it; every acknowledged write is read back. Last, the ephemeral cluster
# loses its quorum: its survivor is never forced (that would delete its data).
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.36 "replaceUnhealthyAfterSeconds: 900" >/dev/null
wait_running demo 3
writer_start demo
old=$(member_id demo demo-1)
# etcd keeps its open files; the pod's next start finds the volume empty.
fault wipe "claim=default/data-demo-1"
kubectl delete pod demo-1 --wait=false >/dev/null
until_keeping_quorum "demo-1, whose volume came back empty, removed and added again under a new ID" \
  demo 2 180 replaced demo demo-1 "$old" 3
writer_check demo

create_cluster scratch 3 3.5.36 "replaceUnhealthyAfterSeconds: 900
  storage: {ephemeral: true}" >/dev/null
wait_running scratch 3
writer_start scratch
old=$(member_id scratch scratch-2)
kubectl delete pod scratch-2 --wait=false >/dev/null
until_keeping_quorum "scratch-2, ephemeral, recreated empty and added again under a new ID" \
  scratch 2 180 replaced scratch scratch-2 "$old" 3
writer_check scratch

# Then the ephemeral cluster loses its quorum (two members' nodes frozen), under policy
# Automatic: forcing would restart the survivor's pod, and its data would go with its emptyDir.
# The survivor is never touched; the condition says why and names it to snapshot from.
kubectl patch etcdcluster scratch --type merge \
  -p '{"spec":{"recovery":{"policy":"Automatic","quorumLossAfterSeconds":20}}}' >/dev/null
node() { kubectl get pod "$1" -o jsonpath='{.spec.nodeName}'; }
node1=$(node scratch-1) node2=$(node scratch-2)
[ "$(node scratch-0)" != "$node1" ] && [ "$(node scratch-0)" != "$node2" ] \
  || fail "scratch-0 shares a node with a member to be lost"
survivor=$(kubectl get pod scratch-0 -o jsonpath='{.metadata.uid}')
writer_start scratch
writer_progress
fault freeze "pod=default/scratch-1"
fault freeze "pod=default/scratch-2"
lost() { field scratch '{.status.conditions[?(@.type=="QuorumLost")].message}'; }
told() { [ "$(field scratch '{.status.phase}')" = Failed ] && lost | grep -q 'Storage is ephemeral'; }
wait_for "the quorum loss of the ephemeral cluster reported, nothing forced" 120 told
log "$(lost)"
lost | grep -q 'snapshot from scratch-0' || fail "the condition does not name the survivor: $(lost)"
sleep 15
[ "$(kubectl get pod scratch-0 -o jsonpath='{.metadata.uid}')" = "$survivor" ] \
  || fail "scratch-0 was forced: its pod, and its data, are gone"
fault unfreeze "node=$node1"
fault unfreeze "node=$node2"
wait_running scratch 3 180
writer_progress
writer_check scratch
log "PASS"
