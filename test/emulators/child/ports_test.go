package child

import "testing"

func TestFreePortsAreDistinctAndBelowEphemeralRange(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	ceiling := EphemeralStart()
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d picked twice", p)
		}
		seen[p] = true
		if ceiling-portFloor > 1000 && (p < portFloor || p >= ceiling) {
			t.Errorf("port %d outside [%d, %d)", p, portFloor, ceiling)
		}
	}
}
