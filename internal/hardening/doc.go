// Package hardening is egressd's attack, load and fault suite. It holds no
// production code: its tests (build tag hardening) build the real binary,
// run `egressd serve` as a child process inside a private network namespace
// that holds only loopback, and prove with numbers that the wall holds —
// every bypass spelling denied and logged, thousands of tunnels and floods
// of hostile names held in bounded memory, slow and broken clients cut by
// their timeouts, and policy, resolver, upstream and ledger faults survived
// without losing the last good policy or any settled spend.
//
// Run it with
//
//	go test -tags hardening -count=1 ./hardening/
//
// It needs root (a network namespace, tmpfs mounts) and Linux. README.md
// records what it covers and the numbers of the last run.
package hardening
