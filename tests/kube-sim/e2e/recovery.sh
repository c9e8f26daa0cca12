#!/usr/bin/env bash
# Quorum loss on Kubernetes, under a writer: the nodes of two of three members are lost (frozen).
# The cluster is Failed with the plan, and nothing changes until a person approves this loss.
# Then the lost members are fenced (their pods deleted: on nodes that do not answer they stay
# Terminating, and the force waits until a person confirms the nodes are down), the survivor
# restarts alone with --force-new-cluster and the cluster grows back learner-first: the same
# cluster ID, every acknowledged write. The lost nodes come back afterwards; their old members
# are not let in. The survivor's etcd container restarts, and forces nothing again. Last, a
# forcing entry someone else wrote into the bootstrap ConfigMap is refused.
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

# Someone who may edit ConfigMaps and delete pods, but not read Secrets, writes an entry that
# forces demo-2 into a cluster of its own and has its pod recreated: member-init refuses it
# (the operator's seal is missing), the other two keep serving, and nothing is forced.
[ "$(kubectl get secret demo-bootstrap-seal -o jsonpath='{.metadata.ownerReferences[0].name}')" = demo ] ||
  fail "the recovery made no seal Secret of the cluster's"
kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-editor}
rules:
  - {apiGroups: [""], resources: [configmaps], verbs: [get, patch]}
  - {apiGroups: [""], resources: [pods], verbs: [get, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: configmap-editor}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-editor}
subjects: [{kind: User, name: eve}]
YAML
entry=$(kubectl get configmap demo-bootstrap -o jsonpath='{.data.demo-2\.json}')
forged=$(python3 -c 'import json,sys; e=json.loads(sys.argv[1]); e.update(state="ForceNew", attempt="1", initialCluster=[p for p in e["initialCluster"] if p["name"]=="demo-2"]); print(json.dumps(json.dumps(e)))' "$entry")
kubectl --as eve patch configmap demo-bootstrap --type merge -p "{\"data\":{\"demo-2.json\":$forged}}" >/dev/null ||
  fail "eve could not write the bootstrap ConfigMap"
! kubectl --as eve get secret demo-bootstrap-seal >/dev/null 2>&1 || fail "eve may read the seal"
writer_start demo
old_pod=$(kubectl get pod demo-2 -o jsonpath='{.metadata.uid}')
kubectl --as eve delete pod demo-2 --wait=false >/dev/null
refused() {
  [ "$(kubectl get pod demo-2 -o jsonpath='{.metadata.uid}')" != "$old_pod" ] &&
    kubectl logs demo-2 -c member-init 2>/dev/null | grep -q "without the operator's seal"
}
wait_for "member-init refused the forged force" 120 refused
log "refused: $(kubectl logs demo-2 -c member-init 2>/dev/null | grep -o "bootstrap entry.*refusing to force" | head -1)"
[ "$(field demo '{.status.members[*].id}')" = "$members" ] || fail "membership changed after a forged force"
[ "$(field demo '{.status.clusterID}')" = "$cluster_id" ] || fail "a forged force made a new cluster"
# The entry as the operator wrote it, and demo-2 is back.
kubectl patch configmap demo-bootstrap --type merge -p "{\"data\":{\"demo-2.json\":$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$entry")}}" >/dev/null
kubectl delete pod demo-2 >/dev/null
wait_running demo 3 180
writer_check demo
log "PASS"
