package pgledger_test

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/internal/lib/pgtest"
)

// cluster is the package's one PostgreSQL cluster; each test gets its own
// database in it.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	c, err := pgtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: these tests need a real PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Remove()
	os.Exit(code)
}

var dbSeq atomic.Int64

// freshDB creates an empty database for t and returns its DSN.
func freshDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	dsn, err := cluster.CreateDB(name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func dbName(dsn string) string {
	s := dsn[strings.LastIndex(dsn, "/")+1:]
	return s[:strings.Index(s, "?")]
}
