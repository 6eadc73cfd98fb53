// Command prober plays the agent in the containment test. It runs inside
// the agent's network, from a FROM-scratch image, in one of two modes:
//
//	prober idle [-listen :6379]   block until stopped (docker exec runs the checks)
//	prober run '<json checks>'    run the checks, print one JSON array of results
//
// Every target comes from the test: the prober has no addresses of its own.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: prober idle [-listen addr] | prober run '<json checks>'")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "idle":
		err = idle(os.Args[2:])
	case "run":
		if len(os.Args) != 3 {
			err = fmt.Errorf("run takes one JSON argument")
			break
		}
		err = runChecks(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "prober:", err)
		os.Exit(1)
	}
}

// idle waits for SIGTERM. With -listen it accepts and closes connections,
// so the probe's lateral scan has a neighbour to find.
func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	listen := fs.String("listen", "", "TCP address to accept connections on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); ln.Close() }()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	<-ctx.Done()
	return nil
}

// runChecks decodes the checks, runs them concurrently (each bounded by its
// own timeout) and prints the results in input order.
func runChecks(spec string) error {
	var checks []Check
	if err := json.Unmarshal([]byte(spec), &checks); err != nil {
		return fmt.Errorf("checks: %w", err)
	}
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			timeout := time.Duration(c.TimeoutMS) * time.Millisecond
			if timeout <= 0 {
				timeout = 5 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			results[i] = c.run(ctx, timeout)
			results[i].ID = c.ID
		})
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(results)
}
