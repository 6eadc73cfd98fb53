package probe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Health asks egressd's admin listener at addr ("host:port") for /healthz
// and returns nil when it answers 2xx. token, when not empty, is sent as a
// bearer token (admin.token_env). It is the Docker HEALTHCHECK: a scratch
// image has no curl, so the binary checks itself.
func Health(ctx context.Context, addr, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// No proxy: the health check must talk to the admin listener itself,
	// even when HTTP_PROXY is set in the environment.
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("health: %s: %s", resp.Status, body)
	}
	return nil
}
