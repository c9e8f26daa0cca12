#!/usr/bin/env bash
# Data that changes under a running member on the real control plane, under a writer: a value
# is rewritten in place on one member's volume (failing storage; etcd has no checksum to
# notice, and its own checks run at start and after compactions only), and that member serves
# it. The operator's check finds its hash differs from the two others' at one revision, says
# so in DataConsistent (through the CRD's schema) and replaces it from the others: a new ID,
# a quorum ready throughout, the others' IDs kept, the changed value gone, every acknowledged
# write read back, and the voters agree again.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.1 "maintenance: {consistencyCheckSeconds: 5}" >/dev/null
wait_running demo 3
writer_start demo
writer_progress
intact=intact-3f9c2a71d04b8e65 broken=broken-3f9c2a71d04b8e65
ctl demo put canary "$intact" >/dev/null || fail "cannot write the canary"
# Later revisions fill the pages after the canary's: etcd rewrites the last page of its key
# bucket from its own copy on the next write, which would undo a change there.
filler=$(head -c 64 /dev/zero | tr '\0' f)
for batch in 1 2 3; do
  # etcdctl txn reads compares, then the puts, then the failure branch, each ended by a blank line.
  { echo; for i in $(seq 1 100); do echo "put filler-$batch-$i $filler"; done; echo; echo; } |
    ctl demo txn >/dev/null || fail "cannot write the fillers"
done
before=$(field demo '{.status.members[*].id}')
old=$(member_id demo demo-2)
# demo-2 alone, answering from its own data (serializable).
direct() {
  ETCDCTL_API=3 etcdctl --endpoints "https://demo-2.demo.default.svc:2379" --dial-timeout=2s --command-timeout=3s \
    --cacert "$WORK/certs-demo/ca.crt" --cert "$WORK/certs-demo/tls.crt" --key "$WORK/certs-demo/tls.key" \
    get canary --consistency=s --print-value-only
}
applied() { [ "$(direct)" = "$intact" ]; }
wait_for "demo-2 applied the canary" 30 applied
sleep 1
fault rewrite claim=default/data-demo-2 "from=$intact" "to=$broken"
[ "$(direct)" = "$broken" ] || fail "demo-2 does not serve the rewritten value: $(direct)"
log "demo-2 serves $(direct)"
consistent() { field demo '{.status.conditions[?(@.type=="DataConsistent")].status}'; }
said() { field demo '{.status.conditions[?(@.type=="DataConsistent")].message}'; }
found() { [ "$(consistent)" = False ] && said | grep -q '^demo-2 holds other data'; }
wait_for "DataConsistent=False naming demo-2" 60 found
log "$(said)"
until_keeping_quorum "demo-2 replaced under a new ID" demo 2 180 replaced demo demo-2 "$old" 3
agreed() { [ "$(consistent)" = True ]; }
wait_for "the voters agree again" 60 agreed
for member in demo-0 demo-1; do
  [[ " $before " == *" $(member_id demo $member) "* ]] || fail "$member was replaced too"
done
[ "$(direct)" = "$intact" ] || fail "demo-2 serves $(direct) after its replacement"
writer_check demo
log "PASS"
