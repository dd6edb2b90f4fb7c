package queue

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// waitDone runs b.Wait and is closed once it returns.
func waitDone(b *Burst) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Wait(context.Background())
	}()
	return done
}

// returned says whether done is closed: at once for a Wait that must
// not have returned (it could only have returned by now), within 10 s
// for one that must.
func returned(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-time.After(20 * time.Millisecond):
		return false
	}
}

func mustReturn(t *testing.T, done <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

// A drain waits while a received message's nodes are not held, and for
// the quiet time after the last receipt; then it goes.
func TestBurstWaitsForEveryNodeHeld(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	b := NewBurst(clk, 500*time.Millisecond, 10*time.Second)
	b.Received(3)
	done := waitDone(b)
	b.Settled()
	b.Settled()
	clk.Step(time.Second)
	if returned(done) {
		t.Fatal("Wait returned with a message whose node is not held")
	}
	b.Received(1) // a second receive of the same burst
	b.Settled()
	b.Settled()
	if returned(done) {
		t.Fatal("Wait returned before the quiet time after the last receipt")
	}
	clk.Step(499 * time.Millisecond)
	if returned(done) {
		t.Fatal("Wait returned before the quiet time after the last receipt")
	}
	clk.Step(time.Millisecond)
	mustReturn(t, done, "Wait did not return once every node was held and the quiet time had passed")
}

// A message that never settles (no worker for it, say) holds a drain back
// for Max at most.
func TestBurstWaitIsBounded(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	b := NewBurst(clk, 500*time.Millisecond, 10*time.Second)
	b.Received(1)
	done := waitDone(b)
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(9 * time.Second)
	if returned(done) {
		t.Fatal("Wait returned before Max")
	}
	clk.Step(time.Second)
	mustReturn(t, done, "Wait did not return at Max")
	var nilBurst *Burst
	nilBurst.Received(1)
	nilBurst.Settled()
	nilBurst.Wait(context.Background()) // no burst: no wait
}
