#!/usr/bin/env bash
# Template changes while a member is down, under a writer. First an operator upgrade alone (a new
# image, so a new member-init image): no member restarts, since nothing etcd runs changed. Then,
# with one member's node frozen, a CA rotation and another operator upgrade: nothing else restarts
# while that member is down (the StatefulSet controller alone would restart the highest member at
# once and take the quorum), a quorum stays ready; once the node is back, the rotation completes.
source "$(dirname "$0")/lib.sh"
REPO=ghcr.io/etcd-operator/etcd-operator
install_operator
set_propagation 20
create_cluster demo 3 3.5.1 "replaceUnhealthyAfterSeconds: 900" >/dev/null
wait_running demo 3
writer_start demo
uid() { kubectl get pod "$1" -o jsonpath='{.metadata.uid}'; }
init_image() { kubectl get statefulset demo -o jsonpath='{.spec.template.spec.initContainers[0].image}'; }
# The images of the operator pods not being deleted. A replica on the frozen node stays
# Terminating until its node answers again (on a real cluster: until the Node is deleted or the
# pod force-deleted); frozen, it runs nothing, so it does not count.
live_images() {
  kubectl -n "$SYSTEM" get pods -o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}{"|"}{.spec.containers[0].image}{"\n"}{end}' |
    sed -n 's/^|//p'
}
upgrade_operator() {
  kubectl -n "$SYSTEM" set image deployment/etcd-operator "operator=$REPO:$1" >/dev/null
  rolled() {
    [ "$(kubectl -n "$SYSTEM" get deployment etcd-operator -o jsonpath='{.status.updatedReplicas}/{.status.readyReplicas}')" = 2/2 ] &&
      [ -z "$(live_images | grep -v ":$1\$")" ]
  }
  wait_for "the operator upgraded to $1" 240 rolled
}

before="$(uid demo-0) $(uid demo-1) $(uid demo-2)"
image=$(init_image)
upgrade_operator 0.2.0
sleep 20
[ "$(uid demo-0) $(uid demo-1) $(uid demo-2)" = "$before" ] || fail "an operator upgrade alone restarted members"
[ "$(init_image)" = "$image" ] || fail "an operator upgrade alone changed the member pods' template ($image → $(init_image))"
log "operator upgraded; no member restarted, member-init stays $image"

node=$(kubectl get pod demo-1 -o jsonpath='{.spec.nodeName}')
others="$(uid demo-0) $(uid demo-2)"
fault freeze "node=$node"
log "froze $node (demo-1)"
old_ca=$(kubectl get secret demo-ca -o jsonpath='{.data.tls\.crt}')
# An operator replica may run on the frozen node: until the node is NotReady and the endpoints
# drop it (~40 s), the API server sends it some webhook calls, which time out, as any webhook's
# would on a real cluster. A person tries again; so does this.
annotated() { kubectl annotate etcdcluster demo etcd.etcd.io/rotate-ca=now --overwrite; }
wait_for "the CA rotation asked for" 90 annotated
# Until the node lifecycle controller marks the frozen node unreachable (~40 s), its status still
# says Ready and the scheduler may place the new operator replica there, where it would wait for
# the 300 s eviction as on any cluster. A person upgrading now would meet the same.
unreachable() { kubectl get node "$node" -o jsonpath='{.spec.taints[*].key}' | grep -q node.kubernetes.io/unreachable; }
wait_for "$node tainted unreachable" 120 unreachable
upgrade_operator 0.3.0
start=$SECONDS
while (( SECONDS - start < 100 )); do
  [ "$(uid demo-0) $(uid demo-2)" = "$others" ] || fail "a member restarted while demo-1 was down"
  ready=$(kubectl get pods -l app.kubernetes.io/instance=demo -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  (( ready >= 2 )) || fail "only $ready members ready while demo-1 was down"
  sleep 2
done
log "nothing restarted in 100 s with demo-1 down; a quorum ready throughout"
fault unfreeze "node=$node"
rotated() {
  [ "$(kubectl get secret demo-ca -o jsonpath='{.data.tls\.crt}')" != "$old_ca" ] &&
    [ -z "$(kubectl get secret demo-ca -o jsonpath='{.data.previous-ca\.crt}')" ] &&
    [ "$(kubectl get secret demo-server-tls -o jsonpath='{.data.ca\.crt}')" = "$(kubectl get secret demo-ca -o jsonpath='{.data.tls\.crt}')" ] &&
    running demo 3 && [ "$(init_image)" = "$REPO:0.3.0" ]
}
wait_for "the CA rotation finished once demo-1 was back, members on the new member-init" 600 rotated
writer_check demo
log "PASS"
