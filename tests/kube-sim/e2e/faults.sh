#!/usr/bin/env bash
# Faults a production cluster meets, under a writer: a pod deleted, a member's data lost, a
# member's data corrupt, a node lost (frozen, its pod stuck Terminating), the operator killed mid scale-up, and a stop
# to zero and back with the same cluster ID.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.4.23 "replaceUnhealthyAfterSeconds: 15" >/dev/null
wait_running demo 3
cluster_id=$(field demo '{.status.clusterID}')
writer_start demo

uid=$(kubectl get pod demo-1 -o jsonpath='{.metadata.uid}')
kubectl delete pod demo-1 --wait=false >/dev/null
wait_for "demo-1 recreated by the StatefulSet" 60 bash -c "[ \"\$(kubectl get pod demo-1 -o jsonpath='{.metadata.uid}')\" != $uid ]"
wait_running demo 3 120

old=$(member_id demo demo-2)
fault wipe "claim=default/data-demo-2"
fault kill "pod=default/demo-2" "container=etcd"
wait_for "demo-2, whose data was lost, replaced" 240 replaced demo demo-2 "$old" 3

# A member whose data is corrupt crash-loops on it: replaced, its pod deleted so that the claim
# (held by PVC protection while a pod uses it) and the corrupt data go with it.
old=$(member_id demo demo-0)
fault corrupt "claim=default/data-demo-0"
# etcd reads garbage and exits at once, or on this restart.
fault kill "pod=default/demo-0" "container=etcd" 2>/dev/null || true
wait_for "demo-0, whose data is corrupt, replaced" 240 replaced demo demo-0 "$old" 3

old=$(member_id demo demo-1)
fault freeze "pod=default/demo-1"
wait_for "demo-1, on a lost node, replaced" 300 replaced demo demo-1 "$old" 3
fault unfreeze "node=$(kubectl get pod demo-1 -o jsonpath='{.spec.nodeName}')"

kubectl scale etcdcluster/demo --replicas=5 >/dev/null
wait_for "scale-up under way" 60 bash -c '[ "$(kubectl get statefulset demo -o jsonpath="{.spec.replicas}")" -ge 4 ]'
leader=$(leader_pod)
fault kill "pod=$SYSTEM/$leader" "container=operator"
log "killed the leading operator replica $leader mid scale-up"
wait_running demo 5 300

kubectl scale etcdcluster/demo --replicas=0 >/dev/null
# About a minute alone; 240 s because CI once saw the operator's pod cut off from the API server
# for a minute here while every other client was served (its lease lapsed, and its restart
# could not connect for 30 s), with five scenarios running on two cores.
wait_for "demo Stopped" 240 bash -c '[ "$(kubectl get etcdcluster demo -o jsonpath="{.status.phase}")" = Stopped ]'
[ -z "$(kubectl get pods -l app.kubernetes.io/instance=demo -o name)" ] || fail "pods left after scaling to zero"
for gone in members leaderID clientEndpoints; do
  [ -z "$(field demo "{.status.$gone}")" ] || fail "status.$gone still shows a stopped cluster's $gone"
done
kubectl scale etcdcluster/demo --replicas=3 >/dev/null
wait_running demo 3 240
[ "$(field demo '{.status.clusterID}')" = "$cluster_id" ] || fail "restart from zero made a new cluster"
writer_check demo
log "PASS"
