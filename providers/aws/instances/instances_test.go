package instances

import "testing"

func TestInstanceID(t *testing.T) {
	for in, want := range map[string]string{
		"aws:///us-east-1a/i-0123456789abcdef0": "i-0123456789abcdef0",
		"aws://us-east-1a/i-0abc":               "i-0abc",
		"gce://project/zone/name":               "",
		"aws:///us-east-1a/":                    "",
		"":                                      "",
		"kwok://i-0abc":                         "",
	} {
		if got := InstanceID(in); got != want {
			t.Errorf("InstanceID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHasTag(t *testing.T) {
	i := &ec2Instance{tags: map[string]string{"kubernetes.io/cluster/prod": "owned", "team": ""}}
	for spec, want := range map[string]bool{
		"kubernetes.io/cluster/prod":        true,
		"kubernetes.io/cluster/prod=owned":  true,
		"kubernetes.io/cluster/prod=shared": false,
		"kubernetes.io/cluster/dev":         false,
		"team":                              true,
		"team=":                             true,
	} {
		if got := i.hasTag(spec); got != want {
			t.Errorf("hasTag(%q) = %v, want %v", spec, got, want)
		}
	}
}
