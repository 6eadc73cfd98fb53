// Package clientcheck holds the test that drives real HTTP clients (curl,
// wget, git, Python, Go, Chromium) through egressd's proxy to a denied
// host and records which of them show the refusal reason; its table is
// the README's "Which clients show the reason".
package clientcheck
