package traffic

import (
	"os"
	"testing"

	"github.com/lastcall/lastcall/test/cluster"
)

// env is the package's one control plane, for the balancers' tests.
var env *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &env)) }
