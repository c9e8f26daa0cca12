#!/usr/bin/env bash
# Quorum loss on Kubernetes, under a writer: the nodes of two of three members are lost (frozen).
# The cluster is Failed with the plan, and nothing changes until a person approves this loss.
# Then the lost members are fenced (their pods deleted: on nodes that do not answer they stay
# Terminating, and the force waits until a person confirms the nodes are down), the survivor
# restarts alone with --force-new-cluster and the cluster grows back learner-first: the same
# cluster ID, every acknowledged write. The lost nodes come back afterwards; their old members
# are not let in. Last the survivor's etcd container restarts, and forces nothing again.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.4.23 "recovery: {quorumLossAfterSeconds: 20}" >/dev/null
wait_running demo 3
cluster_id=$(field demo '{.status.clusterID}')
writer_start demo
sleep 3
node() { kubectl get pod "$1" -o jsonpath='{.spec.nodeName}'; }
node1=$(node demo-1) node2=$(node demo-2)
[ "$(node demo-0)" != "$node1" ] && [ "$(node demo-0)" != "$node2" ] || fail "demo-0 shares a node with a member to be lost: $(node demo-0) $node1 $node2"
fault freeze "pod=default/demo-1"
fault freeze "pod=default/demo-2"
log "froze $node1 and $node2"

quorum_lost() { field demo '{.status.conditions[?(@.type=="QuorumLost")].message}'; }
reported() { [ "$(field demo '{.status.phase}')" = Failed ] && quorum_lost | grep -q 'approve-recovery='; }
wait_for "the quorum loss reported, waiting for approval" 120 reported
log "$(quorum_lost)"
quorum_lost | grep -q 'keeps demo-0' || fail "the plan does not keep the survivor demo-0"
token=$(quorum_lost | sed -n 's/.*approve-recovery=\([0-9a-f]*-[0-9]*\).*/\1/p')
[ -n "$token" ] || fail "no approval token in the condition"
uids() { kubectl get pods -l app.kubernetes.io/instance=demo -o jsonpath='{.items[*].metadata.uid}'; }
before=$(uids)
sleep 15
[ "$(uids)" = "$before" ] || fail "pods changed before the recovery was approved"
[ "$(field demo '{.status.phase}')" = Failed ] || fail "the cluster left Failed without approval"

kubectl annotate etcdcluster demo "etcd.etcd.io/approve-recovery=$token" >/dev/null
log "approved $token"
deleting() { [ -n "$(kubectl get pod "$1" -o jsonpath='{.metadata.deletionTimestamp}')" ]; }
fenced() { deleting demo-1 && deleting demo-2; }
wait_for "the lost members fenced (their pods deleted)" 60 fenced
quorum_lost | grep -q -- '--force --grace-period=0' || fail "the condition does not say how to confirm the lost nodes: $(quorum_lost)"
survivor=$(kubectl get pod demo-0 -o jsonpath='{.metadata.uid}')
sleep 15
[ "$(kubectl get pod demo-0 -o jsonpath='{.metadata.uid}')" = "$survivor" ] \
  || fail "demo-0 was forced while the lost members' pods could still run"

# A person confirms the nodes are down.
kubectl delete pod demo-1 demo-2 --force --grace-period=0 >/dev/null 2>&1
log "force-deleted the pods on the lost nodes"
wait_running demo 3 300
[ "$(field demo '{.status.clusterID}')" = "$cluster_id" ] || fail "recovery made a new cluster"
writer_check demo

# The lost nodes come back: their old processes find themselves removed.
members=$(field demo '{.status.members[*].id}')
fault unfreeze "node=$node1"
fault unfreeze "node=$node2"
sleep 20
wait_running demo 3 60
[ "$(field demo '{.status.members[*].id}')" = "$members" ] || fail "membership changed after the lost nodes came back"
three() { [ "$(ctl demo member list | wc -l)" = 3 ]; }
wait_for "etcd lists the 3 members of the recovered cluster" 30 three
ctl demo get w/first >/dev/null || fail "the cluster does not answer after the lost nodes came back"

# The survivor's etcd container restarts (a crash, an OOM kill). Its pod was replaced on a
# configuration that no longer forces before anyone joined it, so this is an ordinary restart:
# not a second one-member cluster beside the members that joined since.
ended=$(kubectl get events.events.k8s.io -o jsonpath='{range .items[?(@.reason=="EndForceNewCluster")]}{.note}{"\n"}{end}')
[ -n "$ended" ] || fail "no EndForceNewCluster Event: the survivor still runs on the forcing configuration"
writer_start demo
fault kill "pod=default/demo-0" "container=etcd"
log "killed demo-0's etcd container"
sleep 20
wait_running demo 3 120
[ "$(field demo '{.status.members[*].id}')" = "$members" ] || fail "membership changed after the survivor's etcd restarted: $members → $(field demo '{.status.members[*].id}')"
writer_check demo
log "PASS"
