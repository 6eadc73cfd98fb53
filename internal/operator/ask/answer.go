package ask

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// Answer applies a person's answer to the open question id and returns a
// sentence saying what it did. Every open question about the same host and
// port (from any client) is answered with it: grants are per destination,
// as allow: entries are.
func (b *Broker) Answer(id string, a Answer) (string, error) {
	if a.Kind == For && (a.For <= 0 || a.For > MaxFor) {
		return "", fmt.Errorf("%w: --for %v: want a duration up to %v", ErrBadAnswer, a.For, MaxFor)
	}
	if _, ok := ParseKind(string(a.Kind)); !ok {
		return "", fmt.Errorf("%w: %q: want once, for, always or deny", ErrBadAnswer, a.Kind)
	}
	if a.By == "" {
		a.By = "unknown"
	}
	b.mu.Lock()
	q := b.byID[id]
	var snap Question
	claimed := false
	if q != nil {
		snap = q.Question
		// One answer at a time: "always" edits policy.yaml before the
		// answer is recorded, and a deny pressed meanwhile must not be
		// reported as standing while the file grants the host.
		claimed, q.claimed = q.claimed, true
	}
	b.mu.Unlock()
	if q == nil {
		return "", fmt.Errorf("%w: %q (answered already, expired, or never asked)", ErrNoQuestion, id)
	}
	if claimed {
		return "", fmt.Errorf("%w: %q is being answered by someone else", ErrNoQuestion, id)
	}
	now := b.now()
	grant := policy.Grant{Host: snap.Host, Port: snap.Port, By: a.By, Kind: string(a.Kind)}
	var outcome string
	switch a.Kind {
	case Once:
		grant.Until = now.Add(OnceGrace)
		outcome = fmt.Sprintf("allowed %s once (and for %v more)", snap.Target(), OnceGrace)
	case For:
		grant.Until = now.Add(a.For)
		outcome = fmt.Sprintf("allowed %s until %s", snap.Target(), grant.Until.UTC().Format(time.RFC3339))
	case Always:
		outcome = b.always(snap, a, now, &grant)
	case Deny:
		grant.Deny = true
		grant.Until = now.Add(b.rememberDeny())
		outcome = fmt.Sprintf("denied %s (remembered until %s)", snap.Target(), grant.Until.UTC().Format(time.RFC3339))
	}
	b.mu.Lock()
	if b.byID[id] != q { // answered meanwhile by someone else
		b.mu.Unlock()
		return "", fmt.Errorf("%w: %q was answered meanwhile", ErrNoQuestion, id)
	}
	if grant.Until.After(now) {
		b.grants = append(dropTarget(b.grants, snap.Host, snap.Port), grant)
	}
	b.applyLocked() // before the held requests wake and decide again
	answered := b.closeTargetLocked(snap.Host, snap.Port, a)
	snapshot := b.grants
	b.mu.Unlock()
	b.save(snapshot)
	b.kick()
	b.log.Info("a person answered", "question", id, "answer", string(a.Kind), "by", a.By, "host", snap.Host, "port", snap.Port, "outcome", outcome)
	for _, aq := range answered {
		b.out.answered(aq, a, outcome)
	}
	return outcome, nil
}

// always appends the grant to policy.yaml; until the reload lands, and
// when the file cannot be edited, a temporary grant covers it.
func (b *Broker) always(q Question, a Answer, now time.Time, g *policy.Grant) string {
	var err error = ErrReadOnly
	if b.cfg.Always != nil {
		err = b.cfg.Always(q.Host, q.Port, a.By, now)
	}
	if err == nil {
		g.Until = now.Add(OnceGrace) // bridges requests held right now
		return fmt.Sprintf("allowed %s always: added to policy.yaml", q.Target())
	}
	b.log.Warn("could not add the grant to the policy file; granting it for a while instead", "host", q.Host, "port", q.Port, "for", AlwaysFallback.String(), "error", err)
	g.Kind = string(For)
	g.Until = now.Add(AlwaysFallback)
	return fmt.Sprintf("could not edit policy.yaml (%v): allowed %s until %s instead", err, q.Target(), g.Until.UTC().Format(time.RFC3339))
}

func (b *Broker) rememberDeny() time.Duration {
	if a := b.cfg.Policy().Config().Ask; a != nil {
		return a.RememberDeny
	}
	return policy.DefaultAskRememberDeny
}

// dropTarget removes every grant for host:port (a new answer replaces it).
func dropTarget(gs []policy.Grant, host string, port uint16) []policy.Grant {
	out := gs[:0:0]
	for _, g := range gs {
		if g.Host != host || g.Port != port {
			out = append(out, g)
		}
	}
	return out
}

// closeTargetLocked answers every open question for host:port.
func (b *Broker) closeTargetLocked(host string, port uint16, a Answer) []Question {
	var out []Question
	v, r := vocab.Allow, vocab.ReasonAllowlisted
	if a.Kind == Deny {
		v, r = vocab.Deny, vocab.ReasonOperatorDenied
	}
	for k, q := range b.open {
		if k.host == host && k.port == port {
			q.answer = a
			b.removeLocked(q)
			b.record(q, v, r, "question "+q.ID+" answered "+string(a.Kind)+" by "+a.By)
			out = append(out, q.Question)
		}
	}
	return out
}

func (b *Broker) removeLocked(q *question) {
	delete(b.open, q.key)
	delete(b.byID, q.ID)
	if b.perClient[q.key.client]--; b.perClient[q.key.client] <= 0 {
		delete(b.perClient, q.key.client)
	}
	close(q.done)
}

// applyLocked compiles the grants into the policy every edge reads.
func (b *Broker) applyLocked() {
	if b.cfg.Apply != nil {
		b.cfg.Apply(policy.NewOverlay(b.grants))
	}
}

func (b *Broker) save(grants []policy.Grant) {
	if b.cfg.StatePath == "" {
		return
	}
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	if err := saveState(b.cfg.StatePath, grants); err != nil {
		b.log.Error("operator grants not saved: they hold until egressd restarts", "file", b.cfg.StatePath, "error", err)
	}
}

// Run expires questions and grants until ctx ends. Expired questions
// release their held requests (approval_pending); expired grants leave the
// policy at once.
func (b *Broker) Run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	defer b.out.close()
	for {
		next := b.expire()
		if !next.IsZero() {
			t.Reset(max(next.Sub(b.now()), time.Millisecond))
		} else {
			t.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.wake:
		}
	}
}

// expire removes what expired and returns the next expiry (zero if none).
func (b *Broker) expire() time.Time {
	now := b.now()
	b.mu.Lock()
	var next time.Time
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var expired []Question
	for _, q := range b.open {
		if !q.Expires.After(now) {
			b.removeLocked(q)
			b.record(q, vocab.Deny, vocab.ReasonApprovalPending, "question "+q.ID+" expired unanswered")
			expired = append(expired, q.Question)
			continue
		}
		soonest(q.Expires)
	}
	live := b.grants[:0:0]
	changed := false
	for _, g := range b.grants {
		if !g.Until.After(now) && g.Kind == string(Once) && !g.KeepOpen {
			// Past its grace period: no new requests, but what it let
			// through stays open.
			g.KeepOpen, g.Until, changed = true, g.Until.Add(OnceKeep), true
		}
		if g.Until.After(now) {
			live = append(live, g)
			soonest(g.Until)
		}
	}
	changed = changed || len(live) != len(b.grants)
	var snapshot []policy.Grant
	if changed {
		b.grants = live
		b.applyLocked()
		snapshot = live
	}
	b.mu.Unlock()
	if changed {
		b.save(snapshot)
	}
	for _, q := range expired {
		b.out.answered(q, Answer{}, "expired unanswered")
	}
	return next
}

func renameAside(path, bad string) error {
	if err := os.Rename(path, bad); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
