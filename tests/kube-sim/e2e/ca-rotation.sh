#!/usr/bin/env bash
# A CA rotation a person asks for, under a writer. etcd reads its trusted CA files only at start,
# so the order is what keeps the cluster whole: the new CA is trusted beside the old one, every
# member restarts (one at a time) to load that bundle, only then do certificates move to the new
# CA, and last the old CA goes (another roll). A quorum stays ready, no acknowledged write is
# lost, and a certificate from the retired CA no longer gets in.
source "$(dirname "$0")/lib.sh"
install_operator
# This run's kubelets refresh Secret volumes every 10 s: tell the operator (its default is 180 s).
set_propagation 20
create_cluster demo 3 3.5.1 >/dev/null
wait_running demo 3
writer_start demo
# The writer's certificates follow the user-client Secret, as a mounted Secret volume would.
(while [ ! -f "$WORK/stop-writer" ]; do fetch_certs demo 2>/dev/null || true; sleep 5; done) &
cp -r "$WORK/certs-demo" "$WORK/certs-retired"

pem() { kubectl get secret "$1" -o jsonpath="{.data.${2//./\\.}}" | base64 -d; }
signed_by() { openssl verify -partial_chain -CAfile <(echo "$2") <(echo "$1") >/dev/null 2>&1; }
pod_uids() { kubectl get pods -l app.kubernetes.io/instance=demo -o jsonpath='{.items[*].metadata.uid}'; }
old_ca=$(pem demo-ca tls.crt)
before=$(pod_uids)
# Asked for with the kubectl plugin: it sets the annotation a person would, and says so.
out=$(kubectl etcd rotate-ca demo) || fail "kubectl etcd rotate-ca failed: $out"
grep -q 'the same as: kubectl -n default annotate etcdcluster demo --overwrite etcd.etcd.io/rotate-ca=' <<<"$out" ||
  fail "kubectl etcd rotate-ca did not say what it did: $out"
[ -n "$(field demo '{.metadata.annotations.etcd\.etcd\.io/rotate-ca}')" ] || fail "no rotate-ca annotation after kubectl etcd rotate-ca"

start=$SECONDS
moved=""
lowest=3
while :; do
  (( SECONDS - start < 600 )) || fail "the CA rotation did not finish in 600s"
  ready=$(field demo '{.status.readyReplicas}')
  (( ready < lowest )) && lowest=$ready
  (( ready >= 2 )) || fail "only $ready members ready during the CA rotation"
  [ "$(field demo '{.status.phase}')" != Recovering ] || fail "phase Recovering during a planned roll"
  ca=$(pem demo-ca tls.crt)
  peer=$(pem demo-peer-tls tls.crt)
  if [ -z "$moved" ] && [ "$ca" != "$old_ca" ] && signed_by "$peer" "$ca"; then
    moved=$((SECONDS - start))
    # The first leaf from the new CA: every member must already run with the bundle.
    for uid in $(pod_uids); do
      [[ " $before " != *" $uid "* ]] || fail "certificates moved to the new CA while a member still ran with the old trust"
    done
    log "leaves moved to the new CA after ${moved}s, every member restarted before"
  fi
  if [ -n "$moved" ] && [ -z "$(pem demo-ca previous-ca.crt 2>/dev/null)" ] &&
    [ "$(pem demo-server-tls ca.crt)" = "$ca" ] && running demo 3 &&
    [ "$(kubectl get statefulset demo -o jsonpath='{.status.updateRevision}')" = "$(kubectl get statefulset demo -o jsonpath='{.status.currentRevision}')" ] &&
    [ "$(kubectl get statefulset demo -o jsonpath='{.status.updatedReplicas}')" = 3 ]; then
    break
  fi
  sleep 1
done
log "CA rotated in $((SECONDS - start))s; at least $lowest members ready throughout"
for secret in demo-peer-tls demo-server-tls demo-client-tls demo-user-client-tls; do
  signed_by "$(pem $secret tls.crt)" "$ca" || fail "$secret is not signed by the new CA"
done
no_restart_events "during the CA rotation's rolls"
writer_check demo
# The retired CA is trusted no more: its client certificate is refused.
if ETCDCTL_API=3 etcdctl --endpoints https://demo-client.default.svc:2379 --dial-timeout=2s --command-timeout=3s \
  --cacert "$WORK/certs-demo/ca.crt" --cert "$WORK/certs-retired/tls.crt" --key "$WORK/certs-retired/tls.key" \
  get w/first >/dev/null 2>&1; then
  fail "a client certificate from the retired CA still gets in"
fi
log "PASS"
