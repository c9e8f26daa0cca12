#!/usr/bin/env bash
# The chart's namespaced mode with a Helm-issued webhook certificate, on the real authorizer:
# the operator, bound by Roles in the namespace it watches (here `default`) and by a ClusterRole
# with nothing but SubjectAccessReviews, creates, scales and serves a cluster there under a
# writer; it has no right on Secrets elsewhere nor on webhook configurations, and an EtcdCluster
# in a namespace it does not watch is neither admitted through its webhooks nor acted on. Every
# call it made was granted (the test reads kube-apiserver's audit log).
source "$(dirname "$0")/lib.sh"
SA=system:serviceaccount:$SYSTEM:etcd-operator
can() { kubectl auth can-i "$@" --as "$SA"; }

kubectl create namespace elsewhere >/dev/null
helm install etcd-operator "$CHART" --namespace "$SYSTEM" --create-namespace \
  --set 'watchNamespaces={default}' --set webhook.certificate=helm >/dev/null
wait_for "operator installed in namespaced mode, its webhooks trusting Helm's CA" 120 operator_ready

# What the operator may do, as the real authorizer answers.
[ "$(can get secrets -n default)" = yes ] || fail "the operator may not read Secrets where it serves"
for denied in "get secrets -n elsewhere" "list secrets --all-namespaces" "delete pods -n elsewhere" \
  "patch validatingwebhookconfigurations" "patch mutatingwebhookconfigurations" "create secrets -n kube-system"; do
  # shellcheck disable=SC2086
  [ "$(can $denied 2>/dev/null || true)" = no ] || fail "the operator may $denied"
done
log "the operator's rights: its namespaces and its own only; no webhook configuration"

# Helm's certificate is served: the caBundle Helm wrote is what the API server trusts (admission
# works), and the operator never rewrote it.
bundle=$(kubectl get validatingwebhookconfiguration etcd-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
[ "$bundle" = "$(kubectl -n "$SYSTEM" get secret etcd-operator-webhook-tls -o jsonpath='{.data.ca\.crt}')" ] ||
  fail "the webhooks do not trust the CA Helm issued"
! kubectl -n "$SYSTEM" get secret etcd-operator-webhook-tls -o jsonpath='{.data}' | grep -q 'ca.key' ||
  fail "the Helm-issued Secret holds a CA key"

create_cluster demo 3 3.5.1 >/dev/null
wait_running demo 3
writer_start demo
kubectl scale etcdcluster/demo --replicas=5 >/dev/null
wait_running demo 5 300

# A cluster in a namespace the operator does not serve: its webhooks are not called (a spec they
# would refuse is admitted, by the CRD's schema alone), and nothing is made for it.
kubectl -n elsewhere apply -f - >/dev/null <<YAML || fail "the CRD schema refused a cluster outside the watched namespaces"
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: stray
spec:
  size: 3
  version: "3.5.1"
  repository: registry.example/not-allowed/etcd
YAML
sleep 20
[ -z "$(kubectl -n elsewhere get statefulsets,secrets,services -o name 2>/dev/null | grep stray || true)" ] ||
  fail "the operator made objects for a cluster outside its namespaces"
[ -z "$(kubectl -n elsewhere get etcdcluster stray -o jsonpath='{.status}')" ] ||
  fail "the operator wrote the status of a cluster outside its namespaces"
log "a cluster outside the watched namespaces: not admitted by the webhooks, not acted on"

writer_check demo
log "PASS"
