// The linearizability checker of the recorded client histories (porcupine). Built by
// scripts/go-binaries; pinned by go.sum.
module etcd-operator.test/linearizability

go 1.26

require github.com/anishathalye/porcupine v1.3.1
