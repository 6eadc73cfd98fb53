package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ledgerVersion is the on-disk format version; a file with another version
// is refused rather than guessed at. Version 2 may have a journal beside
// it (see journal.go): a version-1 reader, which would not replay it,
// refuses the file instead of forgetting what the journal holds. Version
// 1 files are read as snapshots without a journal.
const ledgerVersion = 2

// maxLedgerBytes bounds the file read at start; a real ledger is a few KiB.
const maxLedgerBytes = 4 << 20

// maxModels bounds the per-model breakdown; model names come from the
// agent, so further names are folded into otherModel.
const (
	maxModels  = 256
	otherModel = "(other)"
)

// ledger is the durable state: what was spent in which period, and what
// is reserved for calls that may have reached the provider but are not
// settled yet. Amounts are nano-USD; the *_usd fields are written for
// people reading the file and ignored on load.
//
// InFlight is what makes a crash overcharge instead of undercharge: a
// reservation is written here before its call is forwarded and replaced
// by the real cost when the call settles, so every call the provider may
// bill is on disk as one or the other. An egressd that finds reservations
// at Open was stopped with those calls in flight and charges them in full.
// The field is omitted when empty, so a version-1 reader that predates it
// reads a quiet ledger and refuses (unknown field) one with calls in
// flight rather than forgetting them.
type ledger struct {
	Version      int                    `json:"version"`
	Period       string                 `json:"period"`
	PeriodStart  time.Time              `json:"period_start"`
	SpentNano    int64                  `json:"spent_nano_usd"`
	SpentUSD     float64                `json:"spent_usd"`
	LifetimeNano int64                  `json:"lifetime_nano_usd"`
	Warned       bool                   `json:"warned"`
	Updated      time.Time              `json:"updated"`
	Models       map[string]*ModelSpend `json:"models,omitempty"`
	InFlight     map[string]*pending    `json:"in_flight,omitempty"`
	// Seq is the last journal record this state holds.
	Seq uint64 `json:"journal_seq"`

	// The entries changed since the last journal record; not in the file.
	touchedModels, touchedFlight map[string]struct{}
}

// ModelSpend is one model's share of the period's spend.
type ModelSpend struct {
	Requests     int64 `json:"requests"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	SpentNano    int64 `json:"spent_nano_usd"`
	// Estimated counts the requests whose charge is an estimate: no usage
	// came from the provider, or egressd stopped while the call was in
	// flight and its reservation was charged in full.
	Estimated int64 `json:"estimated_requests,omitempty"`
}

// pending is one model's reservations of unsettled calls.
type pending struct {
	Calls        int64 `json:"calls"`
	ReservedNano int64 `json:"reserved_nano_usd"`
}

func (l *ledger) clone() ledger {
	c := *l
	c.touchedModels, c.touchedFlight = nil, nil
	c.Models = make(map[string]*ModelSpend, len(l.Models))
	for k, v := range l.Models {
		mv := *v
		c.Models[k] = &mv
	}
	c.InFlight = make(map[string]*pending, len(l.InFlight))
	for k, v := range l.InFlight {
		pv := *v
		c.InFlight[k] = &pv
	}
	return c
}

// touch notes that the entry key of set changed, for the next journal
// record.
func touch(set *map[string]struct{}, key string) {
	if *set == nil {
		*set = make(map[string]struct{})
	}
	(*set)[key] = struct{}{}
}

// untouch forgets the changes noted, once a record or a snapshot holds
// them. The sets keep their storage for the next call.
func (l *ledger) untouch() {
	clear(l.touchedModels)
	clear(l.touchedFlight)
}

// model returns name's entry in the per-model breakdown, created on first
// use; past maxModels names, new ones share otherModel. The caller is
// about to change it, so it is noted for the journal.
func (l *ledger) model(name string) *ModelSpend {
	if l.Models == nil {
		l.Models = make(map[string]*ModelSpend)
	}
	if ms := l.Models[name]; ms != nil {
		touch(&l.touchedModels, name)
		return ms
	}
	if len(l.Models) >= maxModels {
		name = otherModel
	}
	ms := l.Models[name]
	if ms == nil {
		ms = &ModelSpend{}
		l.Models[name] = ms
	}
	touch(&l.touchedModels, name)
	return ms
}

// reserve records a reservation of nano for a call to model and returns
// the key it is held under (folded like the breakdown), for unreserve.
func (l *ledger) reserve(model string, nano int64) string {
	if l.InFlight == nil {
		l.InFlight = make(map[string]*pending)
	}
	p := l.InFlight[model]
	if p == nil && len(l.InFlight) >= maxModels {
		model = otherModel
		p = l.InFlight[model]
	}
	if p == nil {
		p = &pending{}
		l.InFlight[model] = p
	}
	p.Calls++
	p.ReservedNano += nano // the sum stays under the cap, so under maxNano
	touch(&l.touchedFlight, model)
	return model
}

// unreserve removes a reservation made by reserve.
func (l *ledger) unreserve(key string, nano int64) {
	p := l.InFlight[key]
	if p == nil {
		return
	}
	p.Calls--
	p.ReservedNano -= nano
	if p.Calls <= 0 {
		delete(l.InFlight, key)
	}
	touch(&l.touchedFlight, key)
}

// chargeInFlight charges the reservations left by an egressd that stopped
// with calls in flight: each at its reserved amount (the provider may have
// billed up to that much, and the cost is not known), counted as an
// estimated request of its model. It clears them and returns what it
// charged.
func (l *ledger) chargeInFlight() (calls, nano int64) {
	for model, p := range l.InFlight {
		ms := l.model(model)
		ms.Requests = satAdd(ms.Requests, p.Calls)
		ms.Estimated = satAdd(ms.Estimated, p.Calls)
		ms.SpentNano = min(ms.SpentNano+p.ReservedNano, maxNano)
		calls = satAdd(calls, p.Calls)
		nano = min(nano+p.ReservedNano, maxNano)
	}
	l.SpentNano = min(l.SpentNano+nano, maxNano)
	l.LifetimeNano = min(l.LifetimeNano+nano, maxNano)
	l.InFlight = nil
	return calls, nano
}

// readLedger loads the ledger at path: its snapshot with its journal
// replayed. A missing ledger is a fresh one (found false); anything else
// that is not a valid ledger is an error, so that spend is never silently
// reset. torn reports a torn last journal record, which was ignored.
func readLedger(path string) (l ledger, found, torn bool, err error) {
	l, found, err = readSnapshot(path)
	if err != nil {
		return ledger{}, false, false, err
	}
	j, err := readJournal(path)
	if err != nil || len(j) == 0 {
		return l, found, false, err
	}
	if !found {
		// Open writes a snapshot before the first record, and a
		// snapshot is only ever replaced: the file was removed.
		return ledger{}, false, false, fmt.Errorf("ledger %s: %w: a journal without its snapshot", path, ErrLedgerCorrupt)
	}
	if _, torn, err = replay(&l, j); err != nil {
		return ledger{}, false, false, fmt.Errorf("ledger %s: %w: %w", path, ErrLedgerCorrupt, err)
	}
	if err := l.check(); err != nil {
		return ledger{}, false, false, fmt.Errorf("ledger %s after its journal: %w: %w", path, ErrLedgerCorrupt, err)
	}
	return l, true, torn, nil
}

// readSnapshot loads the ledger file itself.
func readSnapshot(path string) (l ledger, found bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return ledger{}, false, nil
	}
	if err != nil {
		return ledger{}, false, fmt.Errorf("open ledger: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLedgerBytes+1))
	if err != nil {
		return ledger{}, false, fmt.Errorf("read ledger %s: %w", path, err)
	}
	if len(b) > maxLedgerBytes {
		return ledger{}, false, fmt.Errorf("ledger %s: %w: larger than %d bytes", path, ErrLedgerCorrupt, maxLedgerBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return ledger{}, false, fmt.Errorf("ledger %s: %w: %w", path, ErrLedgerCorrupt, err)
	}
	if dec.More() {
		return ledger{}, false, fmt.Errorf("ledger %s: %w: trailing data", path, ErrLedgerCorrupt)
	}
	if err := l.check(); err != nil {
		return ledger{}, false, fmt.Errorf("ledger %s: %w: %w", path, ErrLedgerCorrupt, err)
	}
	return l, true, nil
}

func (l *ledger) check() error {
	if l.Version != ledgerVersion && l.Version != 1 {
		return fmt.Errorf("version %d, want 1 or %d", l.Version, ledgerVersion)
	}
	if err := checkPeriod(l.Period); err != nil {
		return err
	}
	if l.SpentNano < 0 || l.SpentNano > maxNano || l.LifetimeNano < 0 || l.LifetimeNano > maxNano {
		return fmt.Errorf("spend out of range")
	}
	if len(l.Models) > maxModels+1 {
		return fmt.Errorf("%d models, want at most %d", len(l.Models), maxModels+1)
	}
	for k, v := range l.Models {
		if v == nil || v.SpentNano < 0 || v.SpentNano > maxNano || v.Requests < 0 || v.Estimated < 0 {
			return fmt.Errorf("models[%q]: invalid", k)
		}
	}
	if len(l.InFlight) > maxModels+1 {
		return fmt.Errorf("%d models in flight, want at most %d", len(l.InFlight), maxModels+1)
	}
	for k, v := range l.InFlight {
		if v == nil || v.Calls <= 0 || v.ReservedNano < 0 || v.ReservedNano > maxNano {
			return fmt.Errorf("in_flight[%q]: invalid", k)
		}
	}
	return nil
}

// writeLedger replaces the snapshot at path atomically and durably: write
// a temp file in the same directory, fsync it, rename it over path, fsync
// the directory. A crash leaves either the old file or the new one, never
// a torn one.
func writeLedger(path string, l ledger) error {
	l.Version = ledgerVersion
	l.SpentUSD = toUSD(l.SpentNano)
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ledger: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ledger dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("ledger temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync ledger: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename ledger: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open ledger dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync ledger dir: %w", err)
	}
	return nil
}

// removeStaleTemps deletes the temporary files writeLedger leaves when the
// process dies between creating one and renaming it: "." + the ledger's
// name + "." + digits + ".tmp", nothing else. It assumes this process is
// the ledger's only writer, as Open does. It returns how many it removed.
func removeStaleTemps(path string) (int, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("list ledger dir: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !isTempName(e.Name(), base) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// isTempName matches the names os.CreateTemp gives writeLedger's pattern.
func isTempName(name, base string) bool {
	mid, ok := strings.CutPrefix(name, "."+base+".")
	if !ok {
		return false
	}
	mid, ok = strings.CutSuffix(mid, ".tmp")
	if !ok || mid == "" {
		return false
	}
	for _, c := range mid {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
