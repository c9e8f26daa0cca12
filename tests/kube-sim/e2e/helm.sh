#!/usr/bin/env bash
# The operator installed, upgraded and uninstalled by real Helm (charts/etcd-operator), under a
# writer: `helm upgrade` to a new operator image restarts no member (nothing etcd runs changed)
# and keeps a quorum ready; `helm uninstall` leaves the CRDs, the cluster and its data, and etcd
# keeps serving; a new `helm install` takes the cluster over again.
source "$(dirname "$0")/lib.sh"
REPO=ghcr.io/etcd-operator/etcd-operator

helm install etcd-operator "$CHART" --namespace "$SYSTEM" --create-namespace >/dev/null
wait_for "operator installed by helm and its webhooks trusted" 120 operator_ready
[ "$(kubectl -n "$SYSTEM" get deployment etcd-operator -o jsonpath='{.spec.template.spec.containers[0].image}')" = "$REPO:0.1.0" ] ||
  fail "the chart does not install the image of its appVersion"

create_cluster demo 3 3.5.1 >/dev/null
wait_running demo 3
writer_start demo
uid() { kubectl get pod "$1" -o jsonpath='{.metadata.uid}'; }
members() { echo "$(uid demo-0) $(uid demo-1) $(uid demo-2)"; }
template() { kubectl get statefulset demo -o jsonpath='{.spec.template}'; }
before=$(members)
template_before=$(template)

helm upgrade etcd-operator "$CHART" --namespace "$SYSTEM" --reuse-values --set image.tag=0.2.0 >/dev/null
upgraded() {
  [ "$(kubectl -n "$SYSTEM" get deployment etcd-operator -o jsonpath='{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}')" = 2/2/2 ] &&
    [ -z "$(kubectl -n "$SYSTEM" get pods -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | grep -v ":0.2.0\$")" ] &&
    operator_ready
}
until_keeping_quorum "the operator upgraded to 0.2.0 by helm upgrade" demo 3 240 upgraded
# The new leader reconciles what it took over: give it the time to do anything it would do.
start=$SECONDS
while (( SECONDS - start < 30 )); do
  [ "$(members)" = "$before" ] || fail "helm upgrade restarted members"
  ready=$(field demo '{.status.readyReplicas}')
  (( ready == 3 )) || fail "only $ready members ready after helm upgrade"
  sleep 1
done
[ "$(template)" = "$template_before" ] || fail "helm upgrade changed the member pods' template"
log "helm upgrade: no member restarted, the pod template unchanged, 3 members ready throughout"

uninstalling helm uninstall etcd-operator --namespace "$SYSTEM"
for crd in etcdclusters etcdbackups etcdrestores; do
  kubectl get crd "$crd.etcd.etcd.io" >/dev/null || fail "helm uninstall removed the CRD $crd"
done
! kubectl get validatingwebhookconfiguration etcd-operator >/dev/null 2>&1 ||
  fail "helm uninstall left the webhook configuration (it would refuse every EtcdCluster write)"
[ "$(members)" = "$before" ] || fail "members restarted when the operator was uninstalled"
ctl demo put w/without-operator x >/dev/null || fail "etcd stopped serving without the operator"
log "helm uninstall: CRDs, the cluster and its members kept, etcd serving"

helm install etcd-operator "$CHART" --namespace "$SYSTEM" >/dev/null
wait_for "operator installed again and its webhooks trusted" 120 operator_ready
kubectl scale etcdcluster/demo --replicas=5 >/dev/null
wait_running demo 5 300
writer_check demo
[ "$(uid demo-0) $(uid demo-1) $(uid demo-2)" = "$before" ] || fail "members restarted"
log "PASS"
