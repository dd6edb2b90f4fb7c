package drainability

import "sync"

// pending are the changes not evaluated yet. wake holds a token while
// there are any.
type pending struct {
	mu   sync.Mutex
	b    batch
	wake chan struct{}
}

type batch struct {
	all        bool
	nodes      map[string]bool
	namespaces map[string]bool
}

func newBatch() batch { return batch{nodes: map[string]bool{}, namespaces: map[string]bool{}} }

func (p *pending) node(name string) { p.mark(func(b *batch) { b.nodes[name] = true }) }

func (p *pending) namespace(ns string) { p.mark(func(b *batch) { b.namespaces[ns] = true }) }

func (p *pending) everything() { p.mark(func(b *batch) { b.all = true }) }

func (p *pending) mark(f func(*batch)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.b)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the changes so far and starts a new batch; the wake token
// goes with them, under the same lock, so no change is left without one.
func (p *pending) take() batch {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.b
	p.b = newBatch()
	select {
	case <-p.wake:
	default:
	}
	return b
}
