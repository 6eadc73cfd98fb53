package meter

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// The ledger is a snapshot (the ledger file, replaced whole and atomically)
// plus a journal beside it (path + ".journal", append-only). A reservation
// or a settle appends one small record and syncs it, instead of rewriting
// the snapshot: on the first-byte path that is one write and one
// fdatasync instead of a temporary file, two fsyncs and a rename.
//
// A record holds the new values of what changed since the record before
// it (the totals, and each touched model's breakdown and reservations),
// not increments, so replaying it twice or over a snapshot that already
// holds it is harmless, and it carries a sequence number: the snapshot
// names the last record it holds, replay skips records up to it and
// demands the rest follow it without a gap. Changes a record cannot say
// (a new period, a merged or recovered ledger, a reload) are written as a
// new snapshot, and so is the journal once it passes compactBytes; the
// journal is emptied only after the snapshot holding it is durable.
//
// A crash can tear only the record being appended, which was never
// acknowledged (its caller had not been answered, its call not
// forwarded): replay ignores a bad last line. A bad line followed by
// others is corruption and an error, never a silent reset.

// compactBytes is the journal size past which the next write is a new
// snapshot; at a few hundred bytes a record that is thousands of calls.
const compactBytes = 1 << 20

// maxJournalBytes bounds the journal read at start; it stays near
// compactBytes, as nothing is appended while a compaction is due.
const maxJournalBytes = 64 << 20

// journalPath is where the journal of the ledger at path lives.
func journalPath(path string) string { return path + ".journal" }

// record is one journal entry: the ledger's new totals and the new value
// of each entry that changed. A nil InFlight value is an entry removed.
type record struct {
	Seq          uint64                 `json:"seq"`
	SpentNano    int64                  `json:"spent_nano_usd"`
	LifetimeNano int64                  `json:"lifetime_nano_usd"`
	Warned       bool                   `json:"warned,omitempty"`
	Updated      time.Time              `json:"updated"`
	Models       map[string]*ModelSpend `json:"models,omitempty"`
	InFlight     map[string]*pending    `json:"in_flight,omitempty"`
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encodeRecord returns the journal line for the changes l has touched
// since the last record, numbered seq, and forgets them: eight hex digits
// of the CRC-32C of the JSON, a space, the JSON, a newline.
func encodeRecord(l *ledger, seq uint64) ([]byte, error) {
	r := record{Seq: seq, SpentNano: l.SpentNano, LifetimeNano: l.LifetimeNano, Warned: l.Warned, Updated: l.Updated}
	if len(l.touchedModels) > 0 {
		r.Models = make(map[string]*ModelSpend, len(l.touchedModels))
		for k := range l.touchedModels {
			r.Models[k] = l.Models[k] // nil only if a rollover removed it, and that is a snapshot
		}
	}
	if len(l.touchedFlight) > 0 {
		r.InFlight = make(map[string]*pending, len(l.touchedFlight))
		for k := range l.touchedFlight {
			r.InFlight[k] = l.InFlight[k]
		}
	}
	l.untouch()
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("encode journal record: %w", err)
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(b, crcTable))
	line := hex.AppendEncode(make([]byte, 0, 9+len(b)+1), sum[:])
	line = append(line, ' ')
	return append(append(line, b...), '\n'), nil
}

// decodeRecord parses one journal line (without its newline).
func decodeRecord(line []byte) (record, error) {
	var r record
	sum, body, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(sum) != 8 {
		return r, errors.New("no checksum")
	}
	var want [4]byte
	if _, err := hex.Decode(want[:], sum); err != nil {
		return r, errors.New("bad checksum")
	}
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(want[:]) {
		return r, errors.New("checksum mismatch")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, err
	}
	if dec.More() {
		return r, errors.New("trailing data")
	}
	return r, nil
}

// apply writes r's values into l.
func (l *ledger) apply(r record) {
	l.Seq = r.Seq
	l.SpentNano, l.LifetimeNano, l.Warned, l.Updated = r.SpentNano, r.LifetimeNano, r.Warned, r.Updated
	for k, v := range r.Models {
		if v == nil {
			continue
		}
		if l.Models == nil {
			l.Models = make(map[string]*ModelSpend)
		}
		l.Models[k] = v
	}
	for k, v := range r.InFlight {
		if v == nil {
			delete(l.InFlight, k)
			continue
		}
		if l.InFlight == nil {
			l.InFlight = make(map[string]*pending)
		}
		l.InFlight[k] = v
	}
}

// replay applies the journal b to l, the snapshot it follows, and
// returns how many records it applied and whether it ignored a torn last
// line. Records the snapshot already holds are skipped.
func replay(l *ledger, b []byte) (applied int, torn bool, err error) {
	var prev uint64
	for n := 1; len(b) > 0; n++ {
		line, rest, complete := bytes.Cut(b, []byte{'\n'})
		b = rest
		r, err := decodeRecord(line)
		if err != nil {
			if !complete || len(b) == 0 {
				return applied, true, nil // the append a crash cut short
			}
			return applied, false, fmt.Errorf("journal line %d: %w", n, err)
		}
		if r.Seq <= prev {
			return applied, false, fmt.Errorf("journal line %d: record %d after %d", n, r.Seq, prev)
		}
		prev = r.Seq
		if r.Seq <= l.Seq {
			continue // the snapshot was written after it
		}
		if r.Seq != l.Seq+1 {
			return applied, false, fmt.Errorf("journal line %d: record %d follows %d: records are missing", n, r.Seq, l.Seq)
		}
		l.apply(r)
		applied++
	}
	return applied, false, nil
}

// readJournal returns the journal of the ledger at path, or nil if there
// is none.
func readJournal(path string) ([]byte, error) {
	f, err := os.Open(journalPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger journal: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJournalBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read ledger journal %s: %w", journalPath(path), err)
	}
	if len(b) > maxJournalBytes {
		return nil, fmt.Errorf("ledger journal %s: %w: larger than %d bytes", journalPath(path), ErrLedgerCorrupt, maxJournalBytes)
	}
	return b, nil
}

// journal is the open journal file. Only the one writer touches it.
type journal struct {
	log    *slog.Logger
	path   string   // the ledger's path
	f      *os.File // the journal; nil until the first snapshot opens it
	snap   *os.File // the snapshot it follows, held to see it removed
	size   int64
	broken bool  // not known to end in a whole record: snapshot before appending
	limit  int64 // compact past this size; 0 = compactBytes (tests lower it)

	resetFailing bool // the last compaction could not empty the journal (logged once)
}

// batch is one ledger write: a snapshot of the whole ledger, or one
// journal record.
type batch struct {
	path string
	full bool
	snap ledger // when full
	rec  []byte // when not
}

// store writes b durably.
func (j *journal) store(b batch) error {
	if b.full {
		return j.compact(b.path, b.snap)
	}
	if j.broken || j.f == nil || j.snap == nil || j.path != b.path {
		return errors.New("journal needs a snapshot first") // writeNewest never asks this
	}
	if _, err := j.f.Write(b.rec); err != nil {
		j.broken = true
		return fmt.Errorf("append to ledger journal: %w", err)
	}
	if err := datasync(j.f); err != nil {
		// After a failed sync the kernel may have dropped the pages:
		// only a new snapshot is known to be on disk.
		j.broken = true
		return fmt.Errorf("sync ledger journal: %w", err)
	}
	if err := j.stillNamed(); err != nil {
		j.broken = true
		return err
	}
	j.size += int64(len(b.rec))
	return nil
}

// stillNamed fails when the journal or its snapshot was removed (or its
// directory was): the record just synced is then in a file no restart
// reads, so it is not durable, and a new snapshot must recreate both.
func (j *journal) stillNamed() error {
	for _, f := range []*os.File{j.f, j.snap} {
		ok, err := linked(f)
		if err != nil {
			return fmt.Errorf("check ledger files: %w", err)
		}
		if !ok {
			return fmt.Errorf("ledger file %s was removed while in use", f.Name())
		}
	}
	return nil
}

// compact writes the snapshot, then empties the journal it now holds.
// The snapshot alone makes the state durable, so once it is written the
// write has succeeded; if the journal cannot be emptied it stays broken
// and the next write is a snapshot again.
func (j *journal) compact(path string, l ledger) error {
	j.broken = true
	if err := writeLedger(path, l); err != nil {
		return err
	}
	// Reopened by name every time: the old handles may be of files that
	// were removed or of another path.
	j.close()
	j.path = path
	if err := j.reset(); err != nil {
		// Durable in the snapshot, so this write succeeded; appending
		// waits until a later snapshot empties the journal.
		if !j.resetFailing {
			j.log.Warn("spend ledger journal could not be emptied: writing whole snapshots until it can",
				"journal", journalPath(path), "err", err)
		}
		j.resetFailing = true
		return nil
	}
	j.broken, j.size, j.resetFailing = false, 0, false
	return nil
}

// close closes the journal's files; the next write is a snapshot that
// reopens them.
func (j *journal) close() {
	for _, f := range []*os.File{j.f, j.snap} {
		if f != nil {
			f.Close()
		}
	}
	j.f, j.snap = nil, nil
}

// reset opens the snapshot and the journal and empties the journal durably, with its
// directory entry, so that records appended next are found after a crash.
func (j *journal) reset() error {
	snap, err := os.Open(j.path)
	if err != nil {
		return err
	}
	j.snap = snap
	f, err := os.OpenFile(journalPath(j.path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	j.f = f
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(j.path))
}
