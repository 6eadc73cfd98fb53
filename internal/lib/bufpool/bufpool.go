// Package bufpool owns the 32 KiB copy buffers that the proxy's relays and
// the gateway's streams borrow, so a thousand idle connections hold none and
// a busy one reuses the same few.
package bufpool

import (
	"io"
	"sync"
)

// Size is the length of every pooled buffer: what io.Copy would allocate.
const Size = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

// Get borrows a buffer; give it back with Put once nothing refers to it.
func Get() *[]byte { return pool.Get().(*[]byte) }

// Put returns a buffer from Get.
func Put(b *[]byte) { pool.Put(b) }

// Copy is io.Copy with a pooled buffer. It hides src's WriteTo and dst's
// ReadFrom, which could call back into Copy and would allocate their own.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	b := Get()
	defer Put(b)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *b)
}
