package main

import (
	"context"
	"errors"
	"os"

	"github.com/egressd/egressd/declog"
)

// adminStream is wired to the admin package once its client lands.
func adminStream(url, tokenEnv string, denied bool) (func(ctx context.Context, fn func(declog.Entry) error) error, error) {
	_ = os.Getenv(tokenEnv)
	return nil, errors.New("--admin is not available yet")
}
