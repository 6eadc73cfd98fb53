package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// dnsServer is a minimal authoritative server: A records from the flags,
// NXDOMAIN for any other name, NODATA for other types of a known name. It
// is written by hand because only egressd's dnsfilter and resolver
// packages may use a DNS library.
type dnsServer struct {
	rec     *recorder
	records records
}

const (
	typeA   = 1
	classIN = 1
	rcodeNX = 3
	rcodeFE = 1 // FORMERR
)

var errQuery = errors.New("malformed query")

func (d *dnsServer) serveUDP(pc net.PacketConn) error {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if resp := d.answer(buf[:n], from.String()); resp != nil {
			pc.WriteTo(resp, from)
		}
	}
}

func (d *dnsServer) serveTCP(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			if resp := d.answer(msg, c.RemoteAddr().String()); resp != nil {
				c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(resp))))
				c.Write(resp)
			}
		}()
	}
}

// answer builds the response to one query, or nil for garbage.
func (d *dnsServer) answer(q []byte, from string) []byte {
	name, qtype, end, err := parseQuestion(q)
	if err != nil {
		if len(q) < 12 {
			return nil
		}
		return header(q[:12], rcodeFE, 0)
	}
	d.rec.query(Query{Name: name, Type: qtype, From: from})
	addr, known := d.records[name]
	switch {
	case !known:
		return append(header(q, rcodeNX, 0), q[12:end]...)
	case qtype != typeA:
		return append(header(q, 0, 0), q[12:end]...)
	}
	msg := append(header(q, 0, 1), q[12:end]...)
	msg = append(msg, 0xc0, 12, 0, typeA, 0, classIN, 0, 0, 0, 5, 0, 4) // TTL 5s
	return append(msg, addr.AsSlice()...)
}

// header copies the query's ID and RD bit into a response header with one
// question and an answers.
func header(q []byte, rcode int, answers uint16) []byte {
	h := make([]byte, 12)
	copy(h, q[:2])
	flags := uint16(0x8400) | binary.BigEndian.Uint16(q[2:])&0x0100 | uint16(rcode) // QR, AA, RD
	binary.BigEndian.PutUint16(h[2:], flags)
	if rcode != rcodeFE {
		binary.BigEndian.PutUint16(h[4:], 1)
	}
	binary.BigEndian.PutUint16(h[6:], answers)
	return h
}

// parseQuestion returns the single question of q and the offset after it.
func parseQuestion(q []byte) (string, uint16, int, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 || q[2]&0x80 != 0 {
		return "", 0, 0, errQuery
	}
	var labels []string
	off := 12
	for {
		if off >= len(q) {
			return "", 0, 0, errQuery
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) {
			return "", 0, 0, errQuery
		}
		labels = append(labels, string(q[off:off+l]))
		off += l
	}
	if off+4 > len(q) {
		return "", 0, 0, errQuery
	}
	return canonical(strings.Join(labels, ".")), binary.BigEndian.Uint16(q[off:]), off + 4, nil
}
