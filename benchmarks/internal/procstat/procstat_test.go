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
			in:   "4242 (squid) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 1 1 1",
			want: Stat{PID: 4242, PPID: 1, CPU: 3 * time.Second, ChildCPU: 100 * time.Millisecond},
		},
		{
			name: "name with spaces and parens",
			in:   "7 (a b) (c)) R 6 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
			want: Stat{PID: 7, PPID: 6, CPU: 30 * time.Millisecond},
		},
		{name: "truncated", in: "7 (x) R 6 7", wantErr: true},
		{name: "no child times", in: "7 (x) R 6 7 7 0 -1 0 0 0 0 0 1 2", wantErr: true},
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

func TestParseMachineBusy(t *testing.T) {
	in := "cpu  100 5 50 9000 30 2 3 10 0 0\ncpu0 50 2 25 4500 15 1 1 5 0 0\n"
	got, err := ParseMachineBusy([]byte(in))
	if want := 1650 * time.Millisecond; err != nil || got != want { // 100+5+50+10 ticks
		t.Errorf("ParseMachineBusy = %v, %v, want %v, nil", got, err, want)
	}
	if _, err := ParseMachineBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("ParseMachineBusy(no cpu line) succeeded, want an error")
	}
}

func TestOwnCountsWaitedChildren(t *testing.T) {
	before, err := Own()
	if err != nil {
		t.Fatal(err)
	}
	// A child that burns CPU and is waited for lands in cutime.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run busy child: %v", err)
	}
	after, err := Own()
	if err != nil {
		t.Fatal(err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if got := after - before; got+20*time.Millisecond < child {
		t.Errorf("Own grew by %v, want at least the child's %v (within a tick or two)", got, child)
	}
}
