#!/usr/bin/env bash
# A member's volume comes back empty under a writer: a node's local disk replaced while its pod
# runs, then the pod restarted; and a member of an ephemeral cluster drained. etcd would start
# such a member with `existing` under its old ID, with no log, term or vote, and let it vote at
# once. Instead member-init refuses to start it (it had been a voter), and the operator removes
# it and adds it again under a new ID. replaceUnhealthyAfterSeconds is far away, so that only
# this path can replace it; every acknowledged write is read back.
source "$(dirname "$0")/lib.sh"
install_operator
create_cluster demo 3 3.5.36 "replaceUnhealthyAfterSeconds: 900" >/dev/null
wait_running demo 3
writer_start demo
old=$(member_id demo demo-1)
# etcd keeps its open files; the pod's next start finds the volume empty.
fault wipe "claim=default/data-demo-1"
kubectl delete pod demo-1 --wait=false >/dev/null
until_keeping_quorum "demo-1, whose volume came back empty, removed and added again under a new ID" \
  demo 2 180 replaced demo demo-1 "$old" 3
writer_check demo

create_cluster scratch 3 3.5.36 "replaceUnhealthyAfterSeconds: 900
  storage: {ephemeral: true}" >/dev/null
wait_running scratch 3
writer_start scratch
old=$(member_id scratch scratch-2)
kubectl delete pod scratch-2 --wait=false >/dev/null
until_keeping_quorum "scratch-2, ephemeral, recreated empty and added again under a new ID" \
  scratch 2 180 replaced scratch scratch-2 "$old" 3
writer_check scratch
log "PASS"
