// Package e2e runs lastcall's node agent against a real control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) and
// the real amazon-ec2-metadata-mock.
package e2e

import (
	"os"
	"testing"

	"github.com/lastcall/lastcall/pkg/kubemetrics"
	"github.com/lastcall/lastcall/test/cluster"
)

var env *cluster.Cluster

func TestMain(m *testing.M) {
	kubemetrics.Install() // as main does: before any Kubernetes request
	os.Exit(cluster.Main(m, &env))
}
