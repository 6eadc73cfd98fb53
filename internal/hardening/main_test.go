//go:build hardening

package hardening

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"
)

// Environment variables passed from the outer test process to the one it
// re-executes inside a fresh network namespace.
const (
	envInNetns = "EGRESSD_HARDENING_NETNS"
	envBinary  = "EGRESSD_HARDENING_BIN"
)

// egressdBin is the binary under test, built once by TestMain.
var egressdBin string

// TestMain builds egressd, then re-runs this test binary in a new network
// namespace whose only interface is loopback. Everything — the tests, the
// fake upstreams and DNS, and egressd itself — lives there, so even a bug
// that made egressd dial a metadata or private address could not send a
// packet off the machine: with no route, the dial fails at once.
func TestMain(m *testing.M) {
	if os.Getenv(envInNetns) == "" {
		os.Exit(outer())
	}
	egressdBin = os.Getenv(envBinary)
	if err := inner(); err != nil {
		fmt.Fprintln(os.Stderr, "hardening:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// outer builds the binary outside the namespace (the build may need the
// module cache or network) and re-executes the test binary inside one.
func outer() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "hardening: FAIL: needs root (network namespace, tmpfs mounts, RLIMIT_NOFILE)")
		return 1
	}
	dir, err := os.MkdirTemp("", "egressd-hardening-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hardening:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The child runs egressd as an unprivileged user, which must be able
	// to reach and execute the binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "hardening:", err)
		return 1
	}
	bin := filepath.Join(dir, "egressd")
	build := exec.Command("go", "build", "-o", bin, "github.com/egressd/egressd/cmd/egressd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "hardening: FAIL: go build ./cmd/egressd:", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hardening:", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envInNetns+"=1", envBinary+"="+bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "hardening: FAIL: re-exec in a new network namespace:", err)
		return 1
	}
	return 0
}

// inner prepares the namespace: loopback up, file descriptor limit at
// its maximum (5,000 tunnels need about 10,000 descriptors on each side).
func inner() error {
	if egressdBin == "" {
		return fmt.Errorf("%s not set", envBinary)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}

// loopbackUp sets IFF_UP on lo, the only interface of a new network
// namespace, with the classic SIOCSIFFLAGS ioctl (no ip(8) needed).
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr [40]byte // struct ifreq: 16-byte name, then a union (flags: short)
	copy(ifr[:], "lo")
	if err := ioctl(fd, syscall.SIOCGIFFLAGS, &ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	flags := binary.NativeEndian.Uint16(ifr[16:]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(ifr[16:], flags)
	if err := ioctl(fd, syscall.SIOCSIFFLAGS, &ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

func ioctl(fd int, req uintptr, ifr *[40]byte) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(ifr))); e != 0 {
		return e
	}
	return nil
}
