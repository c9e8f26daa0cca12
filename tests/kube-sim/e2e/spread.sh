#!/usr/bin/env bash
# Members never share a node by default: the scheduler's own spreading is soft, so one node's
# loss could take a quorum. With two schedulable nodes, a 3-member cluster runs two members and
# reports the third as unschedulable rather than put it beside another; once a node frees up it
# is placed there. Then 3 → 5 over six nodes in three zones: five nodes, every zone used.
# Then a cluster on volumes that finish growing only when their pods restart.
# The operator is installed as for a private control plane: listening on 10250 (the webhooks
# the API server calls go there) with its NetworkPolicy admitted by the real API server.
source "$(dirname "$0")/lib.sh"
install_operator examples/private-control-plane
kubectl -n "$SYSTEM" get networkpolicy etcd-operator >/dev/null || fail "the NetworkPolicy was not installed"
ip=$(kubectl -n "$SYSTEM" get pod "$(leader_pod)" -o jsonpath='{.status.podIP}')
curl -sfk "https://$ip:10250/readyz" >/dev/null || fail "the operator does not serve on 10250"
nodes_of() { kubectl get pods -l "app.kubernetes.io/instance=$1" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -v '^$'; }
distinct() { [ "$(nodes_of "$1" | sort -u | wc -l)" = "$2" ] && [ "$(nodes_of "$1" | wc -l)" = "$2" ]; }
for n in 3 4 5 6; do kubectl cordon "node-$n" >/dev/null; done
create_cluster demo 3 3.6.17 >/dev/null
unplaced() { field demo '{.status.conditions[?(@.type=="MembersScheduled")].message}' | grep -q 'cannot be scheduled'; }
wait_for "the member that has no node of its own reported unschedulable" 120 unplaced
log "$(field demo '{.status.conditions[?(@.type=="MembersScheduled")].message}')"
[ "$(nodes_of demo | sort | uniq -d)" = "" ] || fail "two members share a node: $(nodes_of demo | tr '\n' ' ')"
kubectl uncordon node-3 >/dev/null
wait_running demo 3
distinct demo 3 || fail "members share a node: $(nodes_of demo | tr '\n' ' ')"
[ "$(field demo '{.status.conditions[?(@.type=="MembersScheduled")].status}')" = True ] || fail "MembersScheduled is not True once every member is placed"
writer_start demo
for n in 4 5 6; do kubectl uncordon "node-$n" >/dev/null; done
kubectl scale etcdcluster/demo --replicas=5 >/dev/null
wait_running demo 5 300
distinct demo 5 || fail "members of a 5-member cluster share a node: $(nodes_of demo | tr '\n' ' ')"
zones=$(for n in $(nodes_of demo); do kubectl get node "$n" -o jsonpath='{.metadata.labels.topology\.kubernetes\.io/zone}{"\n"}'; done | sort -u | wc -l)
[ "$zones" = 3 ] || fail "five members use $zones of three zones"
writer_check demo

# Volumes whose driver cannot grow a mounted file system (StorageClass offline-expansion): after
# the claims grow, each stays FileSystemResizePending until its pod starts again. The operator
# restarts the members for it through its health-gated roll, one at a time, two of three ready
# throughout, and the expansion completes.
create_cluster disk 3 3.6.17 "storage: {storageClassName: offline-expansion}" >/dev/null
wait_running disk 3
writer_start disk
kubectl patch etcdcluster disk --type merge -p '{"spec": {"storage": {"size": "20Gi"}}}' >/dev/null
grown() {
  [ "$(field disk '{.status.conditions[?(@.type=="VolumeExpansion")].status}')" = True ] &&
    [ "$(kubectl get pvc -l app.kubernetes.io/instance=disk -o jsonpath='{.items[*].status.capacity.storage}')" = "20Gi 20Gi 20Gi" ] &&
    running disk 3
}
pending() { kubectl get pvc data-disk-0 -o jsonpath='{.status.conditions[?(@.type=="FileSystemResizePending")].status}' | grep -q True; }
wait_for "the claims of disk waiting for their pods to restart" 60 pending
until_keeping_quorum "the file systems of disk grown to 20Gi by restarting its members" disk 2 400 grown
writer_check disk
log "PASS"
