// Package e2e is the containment test of egressd on a real Docker engine:
// it compiles egressd and the test programs under cmd/ (prober, the agent
// stand-in; fakeinternet, HTTP/HTTPS/DNS and a fake model provider; fakedb,
// a TCP service on egressd's outside network), builds FROM-scratch images,
// starts compose/compose.yaml with an override that swaps the agent for the
// prober, and checks from inside the agent's network that the only way out
// is egressd. It also runs `egressd probe` with and without the host wall.
//
// The test files carry the e2e build tag:
//
//	go test -tags e2e -count=1 -v -timeout 25m ./compose/e2e/
//
// It needs root (it installs and removes host firewall rules), docker and
// docker-compose; without them it fails, it never skips. Every name and
// address it uses lives on the Docker networks it creates, and it removes
// its containers, networks, volumes, images and firewall rules whatever
// happens.
package e2e
