package procstat

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr bool
	}{
		{
			name: "plain",
			in:   "4242 (squid) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1",
			want: Stat{PID: 4242, PPID: 1, CPU: 3 * time.Second},
		},
		{
			name: "name with spaces and parens",
			in:   "7 (a b) (c)) R 6 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
			want: Stat{PID: 7, PPID: 6, CPU: 30 * time.Millisecond},
		},
		{name: "truncated", in: "7 (x) R 6 7", wantErr: true},
		{name: "no name", in: "7 x R 6", wantErr: true},
		{name: "bad utime", in: "7 (x) R 6 7 7 0 -1 0 0 0 0 0 zz 2 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseStat error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "present", in: "Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\nThreads: 3\n", want: 2 << 20},
		{name: "kernel thread", in: "Name:\tkthreadd\nState:\tS\n", want: 0},
		{name: "bad unit", in: "VmRSS:\t 12 MB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRSS([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseRSS error = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseRSS = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTreeCountsChildren(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("need sleep(1): %v", err)
	}
	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	self := os.Getpid()
	if got := Descendants(self); !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("Descendants(self) = %v, want it to contain the child %d", got, cmd.Process.Pid)
	}
	u, err := Tree(self)
	if err != nil {
		t.Fatalf("Tree(self): %v", err)
	}
	if u.Procs < 2 || u.RSS <= 0 {
		t.Errorf("Tree(self) = %+v, want at least 2 processes and RSS > 0", u)
	}
}

func TestTreeGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	if _, err := Tree(cmd.Process.Pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Tree(exited pid) error = %v, want ErrNoProcess", err)
	}
}
