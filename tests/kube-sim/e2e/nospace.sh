#!/usr/bin/env bash
# NOSPACE on the real control plane, under a writer: a cluster with a 4 MiB quota filled by
# overwriting one key refuses every write; without a person, the operator compacts, defragments
# each member (followers first, the leader after handing over) and disarms: writes are accepted
# again, a quorum ready throughout, every acknowledged write read back.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.1 "options: {quotaBackendBytes: 4194304}" >/dev/null
wait_running demo 3
writer_start demo
head -c 262144 /dev/zero | tr '\0' x >"$WORK/value"
for i in $(seq 1 40); do
  if ! out=$(ctl demo put history <"$WORK/value" 2>&1); then break; fi
done
grep -q 'database space exceeded' <<<"$out" || fail "a 4 MiB quota accepted 10 MiB: $out"
log "NOSPACE: $out"
writable() { ctl demo put probe x; }
until_keeping_quorum "writes accepted again without a person" demo 2 180 writable
# The Events say what was done: compacted, each member defragmented, disarmed. Repeats of one
# reason are one Event with a series count (the recorder aggregates them, as client-go's does).
events() {
  kubectl get events.events.k8s.io -o jsonpath='{range .items[*]}{.regarding.name} {.reason} {.series.count}{"\n"}{end}' |
    awk '$1 == "demo" { n[$2] += ($3 == "" ? 1 : $3) } END { for (r in n) print r, n[r] }'
}
count() { events | awk -v r="$1" '$1 == r { print $2 }'; }
mended() { [ -n "$(count NospaceCompact)" ] && [ -n "$(count NospaceDisarm)" ] && (( $(count NospaceDefragment) >= 3 )); }
wait_for "Events of the compaction, each member's defragmentation and the disarm" 30 mended
log "Events: $(events | sort | tr '\n' ' ')"
writer_check demo
log "PASS"
