package meter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ledgerVersion is the on-disk format version; a file with another version
// is refused rather than guessed at.
const ledgerVersion = 1

// maxLedgerBytes bounds the file read at start; a real ledger is a few KiB.
const maxLedgerBytes = 4 << 20

// maxModels bounds the per-model breakdown; model names come from the
// agent, so further names are folded into otherModel.
const (
	maxModels  = 256
	otherModel = "(other)"
)

// ledger is the durable state: what was spent in which period. Amounts are
// nano-USD; the *_usd fields are written for people reading the file and
// ignored on load.
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
}

// ModelSpend is one model's share of the period's spend.
type ModelSpend struct {
	Requests     int64 `json:"requests"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	SpentNano    int64 `json:"spent_nano_usd"`
}

func (l *ledger) clone() ledger {
	c := *l
	c.Models = make(map[string]*ModelSpend, len(l.Models))
	for k, v := range l.Models {
		mv := *v
		c.Models[k] = &mv
	}
	return c
}

// readLedger loads path. A missing file is a fresh ledger (found false);
// anything else that is not a valid ledger is an error, so that spend is
// never silently reset.
func readLedger(path string) (l ledger, found bool, err error) {
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
	if l.Version != ledgerVersion {
		return fmt.Errorf("version %d, want %d", l.Version, ledgerVersion)
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
		if v == nil || v.SpentNano < 0 || v.Requests < 0 {
			return fmt.Errorf("models[%q]: invalid", k)
		}
	}
	return nil
}

// writeLedger replaces path atomically and durably: write a temp file in
// the same directory, fsync it, rename it over path, fsync the directory.
// A crash leaves either the old file or the new one, never a torn one.
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
