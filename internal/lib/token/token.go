// Package token owns how egressd compares the agent token a request
// carries with the one it expects: in constant time, whatever the lengths.
package token

import (
	"crypto/sha256"
	"crypto/subtle"
)

// Equal reports whether got is want. It compares hashes so that neither
// the content nor the length of want leaks through timing; an empty got
// never matches.
func Equal(got, want string) bool {
	if got == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
