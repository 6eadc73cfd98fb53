package hop

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIs(t *testing.T) {
	h := http.Header{"Connection": {"close, X-Secret"}, "X-Secret": {"1"}, "X-Kept": {"2"}}
	tests := []struct {
		name string
		want bool
	}{
		{"Connection", true},
		{"Transfer-Encoding", true},
		{"Proxy-Authorization", true},
		{"X-Secret", true},
		{"X-Kept", false},
		{"Content-Type", false},
	}
	for _, tt := range tests {
		if got := Is(tt.name, h); got != tt.want {
			t.Errorf("Is(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name        string
		in          http.Header
		keepUpgrade bool
		want        http.Header
	}{
		{
			name: "plain",
			in:   http.Header{"Connection": {"keep-alive, X-Named"}, "X-Named": {"a"}, "Keep-Alive": {"5"}, "Te": {"trailers"}, "Accept": {"*/*"}},
			want: http.Header{"Accept": {"*/*"}},
		},
		{
			name:        "websocket keeps its upgrade",
			in:          http.Header{"Connection": {"Upgrade, X-Named"}, "X-Named": {"a"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"k"}},
			keepUpgrade: true,
			want:        http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"k"}},
		},
	}
	for _, tt := range tests {
		Remove(tt.in, tt.keepUpgrade)
		if diff := cmp.Diff(tt.want, tt.in); diff != "" {
			t.Errorf("%s: Remove (-want +got):\n%s", tt.name, diff)
		}
	}
}
