# Helpers for the end-to-end scenarios: they run inside `kube-sim run` (KUBECONFIG set, cluster
# DNS in /etc/hosts) and drive the operator only through kubectl and etcdctl, as a user would.
set -euo pipefail

ROOT=${ROOT:?the repository root}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
SYSTEM=etcd-operator-system
# `kubectl etcd`: the operator's binary (the one its image runs here) under the plugin's name on
# PATH, as a user installs it.
mkdir -p "$WORK/bin"
ln -sfn "$KUBE_SIM_STATE/images/operator/etcd-operator" "$WORK/bin/kubectl-etcd"
PATH=$WORK/bin:$PATH

# Real Helm (scripts/kube-clients), its own files in the scenario's directory, not the user's home.
CHART=$ROOT/charts/etcd-operator
helm() {
  HELM_CACHE_HOME=$WORK/helm/cache HELM_CONFIG_HOME=$WORK/helm/config HELM_DATA_HOME=$WORK/helm/data \
    "${HELM:-$ROOT/target/tools/helm}" "$@" 2> >(grep -v 'found symbolic link' >&2)
}

log() { echo "[$(date +%T)] $*" >&2; }

# Everything a person would look at when a scenario fails.
dump() {
  log "---- state at failure ----"
  kubectl get etcdclusters,statefulsets,pods,pvc -o wide 2>&1 || true
  kubectl get etcdclusters -o yaml 2>&1 | sed -n '/^  status:/,/^- apiVersion/p' | head -80 || true
  kubectl get etcdbackups,etcdrestores -o yaml 2>&1 | sed -n '/^  status:/,/^- apiVersion/p' | head -60 || true
  for pod in $(kubectl -n "$SYSTEM" get pods -o name 2>/dev/null); do
    log "logs of $pod"
    kubectl -n "$SYSTEM" logs "$pod" 2>&1 | grep -v 'press ctrl' | tail -25 | cut -c1-600 || true
  done
  for pod in $(kubectl get pods -l app.kubernetes.io/name=etcd -o name 2>/dev/null); do
    log "etcd logs of $pod"
    # One line per entry: time, message, peer and error (a TLS refusal says why here).
    kubectl logs "$pod" -c etcd 2>&1 | grep -v '"level":"debug"' | tail -12 | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        print(line.rstrip()[:300]); continue
    print(e.get("ts", "")[11:23], e.get("msg", ""), e.get("remote-addr", ""), e.get("error", ""))' || true
  done
}

fail() { log "FAILED: $*"; dump; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local what=$1 limit=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > limit )); then fail "timed out after ${limit}s waiting for: $what"; fi
    sleep 1
  done
  log "ok after $((SECONDS - start))s: $what"
}

operator_ready() {
  [ "$(kubectl -n "$SYSTEM" get deployment etcd-operator -o jsonpath='{.status.readyReplicas}')" = 2 ] &&
    [ -n "$(kubectl get mutatingwebhookconfiguration etcd-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] &&
    [ -n "$(kubectl get validatingwebhookconfiguration etcd-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]
}

# install_operator [KUSTOMIZATION]: the file a release ships (manifests/install.yaml, which a test
# keeps equal to what manifests/ renders), or an overlay of manifests/.
install_operator() {
  if [ -n "${1:-}" ]; then
    kubectl apply --server-side -k "$ROOT/$1" >/dev/null
  else
    kubectl apply --server-side -f "$ROOT/manifests/install.yaml" >/dev/null
  fi
  wait_for "operator installed and its webhooks trusted" 120 operator_ready
}

# uninstalling COMMAND...: runs COMMAND, which uninstalls the operator, and waits until its pods
# are gone. The operator's calls refused meanwhile are expected (its RBAC bindings go while its
# pods shut down): the window is recorded for the test's audit-log check (tests/e2e.rs).
uninstalling() {
  local from
  from=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
  "$@" >/dev/null
  operator_gone() { [ -z "$(kubectl -n "$SYSTEM" get deployment,pods -o name)" ]; }
  wait_for "the operator uninstalled ($*)" 120 operator_gone
  echo "$from $(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" >>"$KUBE_SIM_STATE/uninstalling"
}

# set_operator_env NAME VALUE: sets an environment variable of the operator's Deployment and waits
# for both replicas to run with it.
set_operator_env() {
  ENV_NAME=$1 ENV_VALUE=$2
  kubectl -n "$SYSTEM" set env deployment/etcd-operator "$ENV_NAME=$ENV_VALUE" >/dev/null
  wait_for "operator pods rolled with $ENV_NAME=$ENV_VALUE" 180 operator_env_set
}
operator_env_set() {
  [ "$(kubectl -n "$SYSTEM" get pods -o jsonpath="{.items[*].spec.containers[0].env[?(@.name==\"$ENV_NAME\")].value}")" = "$ENV_VALUE $ENV_VALUE" ] &&
    operator_ready
}

# set_propagation SECONDS: how long the operator waits for a changed CA bundle to reach every
# pod (scenarios that run kube-sim with a shorter Secret volume sync say so).
set_propagation() {
  PROPAGATION=$1
  set_operator_env CA_BUNDLE_PROPAGATION_SECONDS "$PROPAGATION"
}

field() { kubectl get etcdcluster "$1" -o jsonpath="$2"; }

# running NAME SIZE: phase Running with SIZE ready members.
running() {
  [ "$(field "$1" '{.status.phase}')" = Running ] && [ "$(field "$1" '{.status.readyReplicas}')" = "$2" ] &&
    [ "$(field "$1" '{.status.observedGeneration}')" = "$(field "$1" '{.metadata.generation}')" ]
}

# until_keeping_quorum WHAT CLUSTER LEAST LIMIT COMMAND...: waits up to LIMIT seconds for COMMAND
# while at least LEAST members of CLUSTER stay ready, sampled every second.
until_keeping_quorum() {
  local what=$1 cluster=$2 least=$3 limit=$4 start=$SECONDS ready
  shift 4
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - start < limit )) || fail "not done in ${limit}s: $what"
    ready=$(field "$cluster" '{.status.readyReplicas}')
    (( ready >= least )) || fail "only $ready members of $cluster ready while waiting for: $what"
    sleep 1
  done
  log "ok after $((SECONDS - start))s, at least $least members of $cluster ready throughout: $what"
}

wait_running() { wait_for "$1 Running with $2 ready members" "${3:-240}" running "$1" "$2"; }

# The user client certificate the operator issued, as files.
fetch_certs() {
  local cluster=$1 dir=$WORK/certs-$1
  mkdir -p "$dir"
  for key in ca.crt tls.crt tls.key; do
    kubectl get secret "$cluster-user-client-tls" -o jsonpath="{.data.${key//./\\.}}" | base64 -d >"$dir/$key"
  done
}

ctl() {
  local cluster=$1
  shift
  ETCDCTL_API=3 etcdctl --endpoints "https://$cluster-client.default.svc:2379" --dial-timeout=2s --command-timeout=3s \
    --cacert "$WORK/certs-$cluster/ca.crt" --cert "$WORK/certs-$cluster/tls.crt" --key "$WORK/certs-$cluster/tls.key" "$@"
}

# A writer that records every write etcd acknowledged; writer_check reads each one back.
writer_start() {
  local cluster=$1
  fetch_certs "$cluster"
  # The client Service lists members once their pods are ready, which can lag the phase.
  wait_for "the client Service of $cluster answers" 60 ctl "$cluster" put w/first x
  rm -f "$WORK/stop-writer" "$WORK/acked"
  touch "$WORK/acked"
  (
    i=0
    while [ ! -f "$WORK/stop-writer" ]; do
      if ctl "$cluster" put "w/$i" "$i" >/dev/null 2>&1; then echo "w/$i" >>"$WORK/acked"; fi
      i=$((i + 1))
      sleep 0.05
    done
  ) &
  WRITER=$!
  log "writer started against $cluster"
}

# writer_progress: waits until the writer has had another write acknowledged (writes are
# accepted now, and a fault that follows has acknowledged writes to lose).
writer_progress() {
  local before
  before=$(wc -l <"$WORK/acked")
  more() { [ "$(wc -l <"$WORK/acked")" -gt "$before" ]; }
  wait_for "the writer acknowledged another write" 60 more
}

# writer_check CLUSTER: stops the writer and reads every acknowledged write back from CLUSTER.
writer_check() {
  local cluster=$1
  touch "$WORK/stop-writer"
  wait "$WRITER" || true
  fetch_certs "$cluster"
  wait_for "the client Service of $cluster answers" 60 ctl "$cluster" get w/first
  local acked missing
  acked=$(wc -l <"$WORK/acked")
  [ "$acked" -gt 0 ] || fail "the writer had no write acknowledged"
  ctl "$cluster" get w/ --prefix --keys-only >"$WORK/listed" || fail "cannot read the keys back from $cluster"
  { grep -v '^$' "$WORK/listed" || true; } | sort >"$WORK/present"
  missing=$(sort "$WORK/acked" | comm -23 - "$WORK/present" | wc -l)
  [ "$missing" = 0 ] || fail "$missing of $acked acknowledged writes are missing"
  log "all $acked acknowledged writes read back"
}

# A cluster of SIZE members on etcd VERSION.
create_cluster() {
  local name=$1 size=$2 version=$3
  shift 3
  kubectl apply -f - <<YAML
apiVersion: etcd.etcd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: $name
spec:
  size: $size
  version: "$version"
  $*
YAML
}

# A fault through kube-sim's node agent (see tests/kube-sim/src/faults.rs).
fault() { kube-sim fault "$@" >/dev/null; }

member_id() { field "$1" "{.status.members[?(@.name==\"$2\")].id}"; }

# replaced CLUSTER MEMBER OLD_ID: the member is back as a ready voter with a new ID.
replaced() {
  local id
  id=$(member_id "$1" "$2")
  [ -n "$id" ] && [ "$id" != "$3" ] && running "$1" "$4"
}

# The operator replica that holds the leader Lease.
leader_pod() { kubectl -n "$SYSTEM" get lease -o jsonpath='{.items[0].spec.holderIdentity}'; }

# no_restart_events WHEN: planned pod restarts (a rolling update, a learner starting) are the
# StatefulSet's; the operator reports no RestartMembers step for them.
no_restart_events() {
  local restarts
  restarts=$(kubectl get events.events.k8s.io -o jsonpath='{range .items[?(@.reason=="RestartMembers")]}{.note}{"\n"}{end}')
  [ -z "$restarts" ] || fail "RestartMembers Events $1: $restarts"
}
