package meter

import "fmt"

// persist returns once ledger version v (or a newer one) is on disk. It is
// a group commit: one write runs at a time and writes the newest state;
// callers wait on a condition, not in a queue, so each wakes when a write
// ends and returns at once if that write carried its change. A caller
// therefore waits for at most the write in progress plus one, and
// concurrent reservations and settles share writes. A caller whose change
// was carried by a write that failed gets that failure instead of
// retrying it (Reserve spaces retries). Errors wrap ErrLedgerUnavailable.
func (m *Meter) persist(v uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		switch {
		case m.written >= v:
			return nil
		case m.attempted >= v && m.writeErr != nil:
			return fmt.Errorf("%w: %w", ErrLedgerUnavailable, m.writeErr)
		case m.writing:
			m.wrote.Wait()
		default:
			m.writeNewest()
		}
	}
}

// writeNewest writes the current state as the one writer: the changes
// since the last write as one journal record, or a whole snapshot when a
// record cannot say them, the journal is not known to be whole, or it is
// due for compaction. Called with mu held and no write running; mu is
// released during the write.
func (m *Meter) writeNewest() {
	m.writing = true
	nv := m.version
	b, err := m.nextBatch()
	m.lastTry, m.attempted = m.clock(), nv
	m.mu.Unlock()

	if err == nil {
		err = m.write(b)
	}

	m.mu.Lock()
	m.writing = false
	m.wrote.Broadcast()
	if err != nil {
		if m.writeErr == nil {
			m.log.Error("spend ledger write failed: refusing metered calls until it can be written; spend is kept in memory",
				"ledger", b.path, "spent_usd", toUSD(m.led.SpentNano), "err", err)
		}
		m.writeErr = err
		return
	}
	if m.writeErr != nil {
		m.log.Info("spend ledger writable again", "ledger", b.path)
	}
	m.writeErr, m.written = nil, max(m.written, nv)
}

// nextBatch captures the next write. Called by the writer with mu held.
func (m *Meter) nextBatch() (batch, error) {
	b := batch{path: m.path}
	j := &m.jour
	limit := j.limit
	if limit <= 0 {
		limit = compactBytes
	}
	b.full = m.full || j.broken || j.f == nil || j.path != m.path || j.size >= limit
	if b.full {
		m.full = false
		m.led.untouch()
		b.snap = m.led.clone()
		return b, nil
	}
	m.led.Seq++
	rec, err := encodeRecord(&m.led, m.led.Seq)
	if err != nil {
		m.full = true // what it held goes into the next snapshot instead
		return b, err
	}
	b.rec = rec
	return b, nil
}

// holdWrites waits for the running write to end and keeps others from
// starting until releaseWrites, for Reconfigure to switch files between
// writes. Called with mu held.
func (m *Meter) holdWrites() {
	for m.writing {
		m.wrote.Wait()
	}
	m.writing = true
}

// releaseWrites ends holdWrites. Called with mu held.
func (m *Meter) releaseWrites() {
	m.writing = false
	m.wrote.Broadcast()
}

// retryDue reports whether a failed write may be retried now, so that a
// broken disk is not hammered by every refused call. Called with mu held.
func (m *Meter) retryDue() bool {
	now := m.clock()
	return now.Sub(m.lastTry) >= writeRetryBackoff || now.Before(m.lastTry)
}

// Close folds the journal into one snapshot, so that the ledger file read
// on its own is current after a clean stop, and closes the ledger files.
// Call it once the gateway has drained; a call settled after it still
// works (its write is a snapshot that reopens the files). A failure is
// returned and logged like any other write: the journal still holds
// everything, so nothing is lost. On a shared store it stops renewing
// leases, makes a last attempt at settles that failed, and closes the
// connections.
func (m *Meter) Close() error {
	if m.remote != nil {
		return m.remote.close()
	}
	m.mu.Lock()
	m.full = true
	m.version++
	v := m.version
	m.mu.Unlock()
	err := m.persist(v)

	m.mu.Lock()
	defer m.mu.Unlock()
	m.holdWrites()
	defer m.releaseWrites()
	m.jour.close()
	return err
}
