package ask

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/egressd/egressd/internal/lib/atomicfile"
	"github.com/egressd/egressd/policy"
)

// StatePath is the grants file: beside the spend ledger, in egressd's
// data directory, so one volume keeps both.
func StatePath(cfg *policy.Config) string {
	dir := filepath.Dir(cfg.Budget.Ledger)
	if cfg.Budget.Ledger == "" {
		dir = "/var/lib/egressd"
	}
	return filepath.Join(dir, "ask-grants.json")
}

// stateVersion is the format of the grants file.
const stateVersion = 1

// stateFile is what the grants file holds: every standing answer (allows
// for a while, remembered denies) with its expiry.
type stateFile struct {
	Version int            `json:"version"`
	Grants  []policy.Grant `json:"grants"`
}

// loadState reads the grants file and drops what expired by now. A missing
// file is an empty state. A file that cannot be parsed is an error: the
// caller keeps it aside rather than overwrite an operator's answers.
func loadState(path string, now time.Time) ([]policy.Grant, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read grants: %w", err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse grants %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("grants %s: version %d, want %d", path, s.Version, stateVersion)
	}
	live := s.Grants[:0]
	for _, g := range s.Grants {
		if g.Until.After(now) && g.Host != "" {
			live = append(live, g)
		}
	}
	return live, nil
}

// saveState replaces the grants file atomically.
func saveState(path string, grants []policy.Grant) error {
	if grants == nil {
		grants = []policy.Grant{}
	}
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Grants: grants}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode grants: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("grants dir: %w", err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// LoadGrants reads the standing answers a running egressd keeps for the
// policy cfg (StatePath), for commands that decide offline (explain).
func LoadGrants(cfg *policy.Config, now time.Time) ([]policy.Grant, error) {
	return loadState(StatePath(cfg), now)
}
