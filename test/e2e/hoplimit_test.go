package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// An EC2 metadata service behind a hop limit of 1, as a pod sees it on a
// Karpenter node: the IMDSv2 token request gets no answer (its reply dies
// a hop short), while a plain read is answered 401. The agent, finding no
// cloud, says why and what to do, in a Warning Event on its node and in
// lastcall_metadata_problem.
func TestAgentNamesAHopLimitOfOne(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			<-r.Context().Done() // the answer never reaches the pod
			return
		}
		http.Error(w, "", http.StatusUnauthorized)
	}))
	t.Cleanup(imds.Close)
	closed := closedURL(t)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(closed, "http://"))
	name := newNode(t, "hop-limit", nil)
	a := startAgent(t, name, imds.URL, "--cloud=auto", "--azure-endpoint="+closed)

	evs := waitEvents(t, "default", name, "MetadataUnreachable")
	ev := evs[len(evs)-1]
	if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, "hop limit") || !strings.Contains(ev.Message, "agent.hostNetwork: true") {
		t.Errorf("MetadataUnreachable: %s %q, want a Warning naming the hop limit and the fix", ev.Type, ev.Message)
	}
	a.checkMetrics(t, []metricWant{{"lastcall_metadata_problem", map[string]string{"cloud": "aws", "cause": "imds-hop-limit"}, 1}})
}
