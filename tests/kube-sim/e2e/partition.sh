#!/usr/bin/env bash
# A node whose kubelet is cut off from the API server for six minutes while its member keeps
# running and serving its peers, under a writer. The real node lifecycle controller marks the
# node NotReady (~50 s), taints it unreachable, and evicts the member's pod at the 300 s
# toleration (it stays Terminating: its kubelet cannot hear of it). etcd still counts the member,
# so the operator neither replaces it nor forces its pod away (replaceUnhealthyAfterSeconds is
# shorter than the partition). Once the node is back, its kubelet ends the pod, the StatefulSet
# recreates it on its data, and the same member rejoins: three members, none added twice, every
# acknowledged write read back.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.36 "replaceUnhealthyAfterSeconds: 120" >/dev/null
wait_running demo 3
writer_start demo
node=$(kubectl get pod demo-1 -o jsonpath='{.spec.nodeName}')
ids=$(field demo '{.status.members[*].id}')
fault partition "node=$node"
log "partitioned $node (demo-1)"
not_ready() { [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = Unknown ]; }
wait_for "$node NotReady by the node lifecycle controller" 120 not_ready
evicted() { [ -n "$(kubectl get pod demo-1 -o jsonpath='{.metadata.deletionTimestamp}')" ]; }
wait_for "demo-1 evicted by the unreachable taint's toleration" 400 evicted
start=$SECONDS
while (( SECONDS - start < 60 )); do
  ctl demo endpoint health --cluster >/dev/null 2>&1 || log "a member does not answer its health check"
  [ "$(field demo '{.status.members[*].id}')" = "$ids" ] || fail "membership changed while demo-1 ran behind a partitioned kubelet: $(field demo '{.status.members[*].id}')"
  sleep 5
done
fault heal "node=$node"
log "healed $node"
back() { [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] && running demo 3; }
wait_for "demo-1 back on its data, the cluster Running with 3 members" 300 back
[ "$(ctl demo member list -w simple | wc -l)" = 3 ] || fail "etcd lists $(ctl demo member list -w simple | wc -l) members"
writer_check demo
[ "$(field demo '{.status.members[*].id}')" = "$ids" ] || log "member IDs changed: $ids → $(field demo '{.status.members[*].id}')"
log "PASS"
