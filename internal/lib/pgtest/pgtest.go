// Package pgtest runs a throwaway PostgreSQL cluster on loopback for
// tests: initdb in a temporary directory, postgres on a free 127.0.0.1
// port with its socket in that directory, stopped by its PID. It uses
// Debian's binaries under /usr/lib/postgresql/*/bin and fails, never
// skips, when they are missing. Run as root, the cluster belongs to the
// postgres system user, since PostgreSQL refuses to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinGlob is where Debian installs PostgreSQL's server binaries.
const BinGlob = "/usr/lib/postgresql/*/bin"

// Superuser is the cluster's superuser (trust authentication on loopback).
const Superuser = "egressd_test"

// startTimeout bounds initdb and a start.
const startTimeout = 60 * time.Second

// Cluster is one running (or stopped) test cluster.
type Cluster struct {
	Dir  string // temporary directory: data/, the socket, the log
	Port int
	bin  string
	cred *syscall.Credential // nil when not root
	cmd  *exec.Cmd
	exit chan struct{}
}

// Start creates and starts a cluster.
func Start() (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if c.Dir, err = os.MkdirTemp("", "egressd-pgtest-"); err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := c.dropRoot(); err != nil {
			c.Remove()
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", c.data(), "-U", Superuser,
		"--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		c.Remove()
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if err := c.startOnFreePort(); err != nil {
		c.Remove()
		return nil, err
	}
	return c, nil
}

// errPortTaken: the port freePort found was taken before postgres bound
// it (by any socket on the machine, a client's among them).
var errPortTaken = errors.New("pgtest: the port was taken before postgres bound it")

// startOnFreePort starts the server on a port the kernel reports free,
// and on another one if something took that port first.
func (c *Cluster) startOnFreePort() error {
	for attempt := 1; ; attempt++ {
		var err error
		if c.Port, err = freePort(); err != nil {
			return err
		}
		err = c.Restart()
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 5 {
			return err
		}
	}
}

func findBin() (string, error) {
	dirs, _ := filepath.Glob(BinGlob)
	var ok []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		return "", fmt.Errorf("pgtest: no PostgreSQL server binaries (initdb, postgres) under %s: install Debian's postgresql package (scripts/test does)", BinGlob)
	}
	sort.Slice(ok, func(i, j int) bool { return version(ok[i]) > version(ok[j]) })
	return ok[0], nil
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// dropRoot hands the directory to the postgres system user that Debian's
// package creates, and runs the binaries as that user.
func (c *Cluster) dropRoot() error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtest: running as root needs the postgres system user (Debian's postgresql package creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(c.Dir, uid, gid); err != nil {
		return fmt.Errorf("pgtest: chown %s: %w", c.Dir, err)
	}
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return nil
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

// LogPath is the server's log.
func (c *Cluster) LogPath() string { return filepath.Join(c.Dir, "postgres.log") }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Restart starts the server (again) on the same directory and port and
// waits until it accepts connections.
func (c *Cluster) Restart() error {
	logf, err := os.OpenFile(c.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.data(), "-p", strconv.Itoa(c.Port),
		"-k", c.Dir, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	c.cmd, c.exit = cmd, make(chan struct{})
	go func(exit chan struct{}) { _ = cmd.Wait(); close(exit) }(c.exit)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-c.exit:
			tail := c.logTail()
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, tail)
			}
			return fmt.Errorf("pgtest: postgres exited at start: %s", tail)
		default:
		}
		if time.Now().After(deadline) {
			_ = c.Stop()
			return fmt.Errorf("pgtest: postgres not ready after %s: %w: %s", startTimeout, err, c.logTail())
		}
		time.Sleep(50 * time.Millisecond) // polling a server's start; no event to wait on
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.LogPath())
	s := string(b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return strings.TrimSpace(s)
}

// Stop shuts the server down (fast shutdown: SIGINT to the postmaster by
// its PID) and waits for it to exit.
func (c *Cluster) Stop() error {
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exit:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exit
	}
	c.cmd = nil
	return nil
}

// Remove stops the server and deletes its directory.
func (c *Cluster) Remove() {
	_ = c.Stop()
	_ = os.RemoveAll(c.Dir)
}

// DSN is a connection string for database db over TCP on loopback.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.Port, db)
}

// CreateDB creates a fresh database and returns its DSN.
func (c *Cluster) CreateDB(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// ErrNotRunning is returned by Exec on a stopped cluster.
var ErrNotRunning = errors.New("pgtest: cluster not running")

// Exec runs sql as the superuser in database db.
func (c *Cluster) Exec(db, sql string, args ...any) error {
	if c.cmd == nil {
		return ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		return fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}
