#!/usr/bin/env bash
# Install from manifests/, the example's defaults, a denied spec, then 1 → 3 → 5 → 3 → 1 with
# `kubectl scale` under a writer (the leader's /metrics following), and deletion with
# reclaimPolicy Delete leaving no claim of its own (another chart's claim with its labels stays)
# and no series on /metrics.
source "$(dirname "$0")/lib.sh"
# The real kube-apiserver, with its own post-start hooks, and nothing kube-sim wrote in its place.
livez=$(kubectl get --raw '/livez?verbose')
grep -q 'poststarthook/start-apiserver-admission-initializer ok' <<<"$livez" || fail "kube-apiserver's post-start hooks are not in /livez: $livez"
[ "$(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')" = v1.37.2 ] ||
  fail "the API server is not kube-apiserver v1.37.2"
install_operator

# A webhook configuration recreated without its caBundle (kubectl replace, a GitOps tool) would
# refuse every EtcdCluster write; the leading operator mends it.
kubectl delete validatingwebhookconfiguration etcd-operator >/dev/null
kubectl apply --server-side -k "$ROOT/manifests" >/dev/null
wait_for "the recreated webhook configuration trusted again" 30 operator_ready

kubectl apply -f - >/dev/null <<<"{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"example\"}}"
kubectl apply -n example -f "$ROOT/examples/etcdcluster.yaml" >/dev/null
yaml=$(kubectl get -n example etcdcluster demo -o yaml)
for default in 'version: 3.5.21' 'size: 8Gi' 'reclaimPolicy: Retain' 'autoTLS: true'; do
  grep -q "$default" <<<"$yaml" || fail "the example's defaults lack '$default':\n$yaml"
done
kubectl delete -n example etcdcluster demo --wait=false >/dev/null
log "the webhook filled in the example's defaults"

if out=$(create_cluster bad 4 3.4.23 2>&1); then fail "size 4 was admitted"; fi
grep -q 'spec.size' <<<"$out" || fail "the denial does not name spec.size: $out"
log "size 4 denied: $out"

create_cluster demo 1 3.4.23 "storage: {reclaimPolicy: Delete}" >/dev/null
wait_running demo 1
# A rule only the validating webhook knows (the CRD schema cannot compare with the old object).
if out=$(kubectl patch etcdcluster demo --type merge -p '{"spec": {"version": "3.6.0"}}' 2>&1); then fail "a minor version skip was admitted"; fi
grep -q 'denied the request.*spec.version.*one minor version at a time' <<<"$out" || fail "the webhook's denial does not name spec.version: $out"
log "version skip denied by the webhook: $out"
id=$(field demo '{.status.clusterID}')
writer_start demo
kubectl patch etcdcluster demo --type merge -p '{"spec": {"storage": {"size": "10Gi"}}}' >/dev/null
expanded() {
  [ "$(kubectl get etcdcluster demo -o jsonpath='{.status.conditions[?(@.type=="VolumeExpansion")].status}')" = True ] &&
    [ "$(kubectl get pvc data-demo-0 -o jsonpath='{.status.capacity.storage}')" = 10Gi ]
}
wait_for "the claims grown to 10Gi, the StatefulSet still applied" 60 expanded
# The leading replica's /metrics (HTTPS, its own CA) follows the cluster.
scrape() {
  local ip
  ip=$(kubectl -n "$SYSTEM" get pod "$(leader_pod)" -o jsonpath='{.status.podIP}')
  curl -sfk "https://$ip:9443/metrics"
}
metric() { scrape | grep "^etcd_operator_cluster_$1{namespace=\"default\",cluster=\"demo\"}" | awk '{print $2}'; }
for size in 3 5 3 1; do
  kubectl scale etcdcluster/demo --replicas=$size >/dev/null
  wait_running demo $size 300
  [ "$(kubectl get statefulset demo -o jsonpath='{.spec.replicas}')" = $size ] || fail "the StatefulSet does not have $size replicas"
  shows() { [ "$(metric voters)" = "$size" ] && [ "$(metric ready_members)" = "$size" ] && [ "$(metric size)" = "$size" ]; }
  wait_for "/metrics shows $size ready voters" 30 shows
done
[ "$(field demo '{.status.members[0].name}')" = demo-0 ] || fail "scale-down did not keep demo-0"
# A converged cluster under a writer is looked at every health interval (30 s), not on every
# write: the commit index in its status changes with each write, and the operator's own status
# write must not wake it again (that loop made ~4 passes and status writes a second per
# cluster, and stalled the control plane's etcd in a longer scenario).
reconciles() { scrape | awk '/^etcd_operator_reconciles_total\{controller="etcdcluster"\}/ {print $2}'; }
before=$(reconciles)
sleep 20
after=$(reconciles)
passes=$(python3 -c "print(int(float('$after') - float('$before')))")
[ "$passes" -le 4 ] || fail "a converged cluster under a writer was reconciled $passes times in 20 s"
log "$passes reconciles in 20 s of a converged cluster under a writer"
no_restart_events "while scaling"
writer_check demo
[ "$(field demo '{.status.clusterID}')" = "$id" ] || fail "the cluster ID changed"

# Bitnami's etcd chart, released as `demo`, labels its claims as the cluster's are labelled:
# deleting the cluster deletes the cluster's claims, not that one.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data-demo-etcd-0
  labels: {app.kubernetes.io/name: etcd, app.kubernetes.io/instance: demo, app.kubernetes.io/managed-by: Helm}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
YAML
kubectl delete etcdcluster demo --timeout=120s >/dev/null || fail "deleting the cluster did not finish"
no_claim_of_demo() { [ -z "$(kubectl get pvc -l app.kubernetes.io/instance=demo -o name | grep -v data-demo-etcd-0)" ]; }
wait_for "no claim of demo left" 60 no_claim_of_demo
foreign=$(kubectl get pvc data-demo-etcd-0 -o jsonpath='{.metadata.name} {.metadata.deletionTimestamp}' 2>&1) || true
[ "$foreign" = "data-demo-etcd-0 " ] ||
  fail "deleting the cluster deleted another release's claim that carries the same labels: $foreign"
scraped=$(scrape) || fail "cannot scrape the leader's /metrics"
grep -q '^etcd_operator_reconciles_total{controller="etcdcluster"}' <<<"$scraped" || fail "no reconcile figures on /metrics"
! grep -q 'cluster="demo"' <<<"$scraped" || fail "the deleted cluster's series are still on /metrics"
log "PASS"
