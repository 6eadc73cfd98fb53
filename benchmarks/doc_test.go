// Package benchmarks holds egressd's Go micro-benchmarks (the decision,
// the DNS handler, the proxy and the gateway, in process on loopback) and,
// under cmd/ and internal/, the suite behind ./benchmarks/run that compares
// egressd with squid, tinyproxy, smokescreen and a direct connection.
package benchmarks
