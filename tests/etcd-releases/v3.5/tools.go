//go:build tools

// Package releases only names the commands this module builds, so that `go mod tidy` keeps
// their dependencies in go.sum.
package releases

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
