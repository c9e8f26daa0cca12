//go:build tools

// Package controlplane only names the commands this module builds, so that `go mod tidy` keeps
// their dependencies in go.sum. Nothing here is compiled into a test.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
