package declog

import "sync"

// Subscribe returns a channel receiving every entry written from now on
// (throttle summaries included, suppressed denials not), and a function
// that ends the subscription. A subscriber that does not keep up misses
// entries; it never slows the Logger. buf <= 0 means 256. The channel is
// closed by the cancel function or by Close.
func (l *Logger) Subscribe(buf int) (<-chan Entry, func()) {
	if buf <= 0 {
		buf = 256
	}
	s := &subscriber{ch: make(chan Entry, buf)}
	l.subsMu.Lock()
	defer l.subsMu.Unlock()
	if l.subsClosed {
		close(s.ch)
		return s.ch, func() {}
	}
	l.subs[s] = struct{}{}
	l.nsubs.Add(1)
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			l.subsMu.Lock()
			defer l.subsMu.Unlock()
			if _, ok := l.subs[s]; ok {
				delete(l.subs, s)
				l.nsubs.Add(-1)
				close(s.ch)
			}
		})
	}
}

func (l *Logger) publish(e *Entry) {
	if l.nsubs.Load() == 0 {
		return
	}
	l.subsMu.RLock()
	defer l.subsMu.RUnlock()
	for s := range l.subs {
		select {
		case s.ch <- *e:
		default:
			l.subDropped.Add(1)
		}
	}
}

func (l *Logger) closeSubscribers() {
	l.subsMu.Lock()
	defer l.subsMu.Unlock()
	for s := range l.subs {
		close(s.ch)
		delete(l.subs, s)
	}
	l.nsubs.Store(0)
	l.subsClosed = true
}

// Tee returns a Recorder that gives every entry to each non-nil r in
// order: the daemon uses it to feed the Logger and the admin metrics.
func Tee(rs ...Recorder) Recorder {
	var out teeRecorder
	for _, r := range rs {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

type teeRecorder []Recorder
