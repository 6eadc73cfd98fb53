package resolver

import "sync"

// call is one upstream query shared by every caller asking the same
// question while it is in flight. entry and err are written once, before
// done is closed.
type call struct {
	done    chan struct{}
	entry   *entry
	err     error
	waiters int // callers joined so far, the first included; under group.mu
}

// group coalesces concurrent identical queries: the first caller for a key
// starts the query on its own goroutine, later callers wait for the same
// result. At most max distinct queries run at once.
type group struct {
	mu  sync.Mutex
	m   map[key]*call
	max int
}

func (g *group) init(max int) {
	g.m = make(map[key]*call)
	g.max = max
}

// join returns the in-flight call for k, starting fn for it if there is
// none. fn must store its result in the cache before returning, so that a
// caller arriving after the call leaves the map finds the cached answer.
func (g *group) join(k key, fn func(key) (*entry, error)) (*call, error) {
	g.mu.Lock()
	if c := g.m[k]; c != nil {
		c.waiters++
		g.mu.Unlock()
		return c, nil
	}
	if len(g.m) >= g.max {
		g.mu.Unlock()
		return nil, ErrBusy
	}
	c := &call{done: make(chan struct{}), waiters: 1}
	g.m[k] = c
	g.mu.Unlock()
	go func() {
		c.entry, c.err = fn(k)
		g.mu.Lock()
		delete(g.m, k)
		g.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// waiting reports how many callers share the in-flight call for k (0 when
// none is in flight). Tests use it to know every caller has joined.
func (g *group) waiting(k key) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.m[k]; c != nil {
		return c.waiters
	}
	return 0
}
