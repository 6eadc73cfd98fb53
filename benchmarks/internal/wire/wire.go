// Package wire is the byte protocol of the benchmark's tunnel target: what
// a client sends inside a CONNECT tunnel and what the target server
// answers.
//
// A tunnel opens with a genuine TLS ClientHello record, so that egressd
// runs its SNI check exactly as it does for an agent's HTTPS; after it the
// bytes are plain commands. Leaving the endpoints' encryption out is on
// purpose: it costs every system the same and would only dilute the share
// of the work the proxy does.
//
// Commands are one op byte and a big-endian uint64 argument:
//
//	'B' n  the server sends n bytes (bulk download)
//	'E' n  the client sends n bytes, the server sends them back (echo)
package wire

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Ops understood by the target server.
const (
	OpBulk byte = 'B'
	OpEcho byte = 'E'
)

// maxEcho bounds one echo so a confused client cannot make the server
// buffer without limit.
const maxEcho = 1 << 16

// ClientHello returns one TLS handshake record carrying a ClientHello for
// serverName, produced by crypto/tls against a pipe (nothing is sent
// anywhere).
func ClientHello(serverName string) ([]byte, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12})
		_ = tc.Handshake() // fails once s is closed; only its first record matters
	}()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	rec, err := ReadRecord(bufio.NewReader(s))
	if err != nil {
		return nil, fmt.Errorf("capture client hello: %w", err)
	}
	if rec[0] != 0x16 {
		return nil, fmt.Errorf("capture client hello: record type %#x, want handshake (0x16)", rec[0])
	}
	return rec, nil
}

// ReadRecord reads one TLS record (5-byte header and body).
func ReadRecord(r io.Reader) ([]byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("read tls record header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(h[3:]))
	if n > 1<<14+2048 {
		return nil, fmt.Errorf("tls record of %d bytes, want at most %d", n, 1<<14+2048)
	}
	rec := make([]byte, 5+n)
	copy(rec, h[:])
	if _, err := io.ReadFull(r, rec[5:]); err != nil {
		return nil, fmt.Errorf("read tls record body: %w", err)
	}
	return rec, nil
}

// WriteCmd sends one command.
func WriteCmd(w io.Writer, op byte, n uint64) error {
	var b [9]byte
	b[0] = op
	binary.BigEndian.PutUint64(b[1:], n)
	_, err := w.Write(b[:])
	return err
}

// Serve speaks the server side on one accepted connection until the client
// closes it or sends something it does not understand.
func Serve(conn net.Conn, chunk []byte) error {
	defer conn.Close()
	if _, err := ReadRecord(conn); err != nil {
		return err
	}
	echo := make([]byte, maxEcho)
	var cmd [9]byte
	for {
		if _, err := io.ReadFull(conn, cmd[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read command: %w", err)
		}
		n := binary.BigEndian.Uint64(cmd[1:])
		switch cmd[0] {
		case OpBulk:
			if err := sendBulk(conn, chunk, n); err != nil {
				return err
			}
		case OpEcho:
			if n > maxEcho {
				return fmt.Errorf("echo of %d bytes, want at most %d", n, maxEcho)
			}
			if _, err := io.ReadFull(conn, echo[:n]); err != nil {
				return fmt.Errorf("read echo: %w", err)
			}
			if _, err := conn.Write(echo[:n]); err != nil {
				return fmt.Errorf("write echo: %w", err)
			}
		default:
			return fmt.Errorf("unknown op %#x", cmd[0])
		}
	}
}

func sendBulk(w io.Writer, chunk []byte, n uint64) error {
	for n > 0 {
		b := chunk
		if uint64(len(b)) > n {
			b = b[:n]
		}
		m, err := w.Write(b)
		n -= uint64(m)
		if err != nil {
			return fmt.Errorf("write bulk: %w", err)
		}
	}
	return nil
}
