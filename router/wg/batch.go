package wg

// Read batching. wireguard-go's TUN reader gets one frame per read(2): with
// TSO that frame is a super-packet split into up to ~45 segments, so TCP is
// well batched, but plain UDP (or ping, or TCP without TSO) arrives one
// packet per Read. Each batch then travels alone through the encryption
// workers, the per-peer sender and a sendmmsg of one message: goroutine
// hand-offs and syscalls per packet, which is where stock wireguard-go
// spends its CPU when iperf3 offers 1 Gbit/s of UDP.
//
// batchTUN makes one Read return everything already queued on the TUN: after
// the first (blocking) read it polls the descriptor with a zero timeout and
// keeps reading while packets are waiting and the caller has room. Follow-up
// reads land in a scratch batch and are copied over, the overflow kept for
// the next Read, so a super-packet never has to fit into what is left of the
// caller's batch (the inner device drops it with ErrTooManySegments then).
// Packets keep their order. When the TUN is idle the cost is one poll(2) per
// Read and latency is unchanged; under load the encryptor sees batches of
// up to conn.IdealBatchSize packets and the UDP socket sends them as one
// GSO super-datagram.

import (
	"fmt"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// batchTUN wraps a tun.Device whose File is a pollable descriptor. Read must
// not be called concurrently (wireguard-go reads from one goroutine).
type batchTUN struct {
	tun.Device
	fd int // the inner device's descriptor; polled only, never read directly

	// Read state, owned by the single reader.
	scratch    [][]byte // follow-up reads, same shape as the caller's batch
	sizes      []int
	head, tail int   // scratch[head:tail] not yet delivered
	err        error // error of a follow-up read, returned by the next Read
	pfd        [1]unix.PollFd
}

// newBatchTUN wraps dev; it returns dev itself if its descriptor is not
// available.
func newBatchTUN(dev tun.Device) (tun.Device, error) {
	f := dev.File()
	if f == nil {
		return dev, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tun batch: %w", err)
	}
	b := &batchTUN{Device: dev, fd: -1}
	if err := rc.Control(func(fd uintptr) { b.fd = int(fd) }); err != nil {
		return nil, fmt.Errorf("tun batch: %w", err)
	}
	b.pfd[0] = unix.PollFd{Fd: int32(b.fd), Events: unix.POLLIN}
	return b, nil
}

// Read fills bufs with as many packets as are queued, waiting only for the
// first one.
func (b *batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if b.head < b.tail {
		return b.deliver(bufs, sizes, offset), nil
	}
	if b.err != nil {
		err := b.err
		b.err = nil
		return 0, err
	}
	n, err := b.Device.Read(bufs, sizes, offset)
	if err != nil || n == 0 {
		return n, err
	}
	for n < len(bufs) && b.readable() {
		b.ensureScratch(bufs)
		m, err := b.Device.Read(b.scratch, b.sizes, offset)
		if err != nil {
			b.err = err
			break
		}
		b.head, b.tail = 0, m
		n += b.deliver(bufs[n:], sizes[n:], offset)
		if b.head < b.tail {
			break // caller's batch is full
		}
	}
	return n, nil
}

// deliver copies pending scratch packets into bufs and returns how many.
func (b *batchTUN) deliver(bufs [][]byte, sizes []int, offset int) int {
	i := 0
	for ; i < len(bufs) && b.head < b.tail; i++ {
		sz := b.sizes[b.head]
		copy(bufs[i][offset:offset+sz], b.scratch[b.head][offset:offset+sz])
		sizes[i] = sz
		b.head++
	}
	return i
}

// readable reports whether a read would not block.
func (b *batchTUN) readable() bool {
	b.pfd[0].Revents = 0
	n, err := unix.Poll(b.pfd[:], 0)
	return err == nil && n > 0 && b.pfd[0].Revents&unix.POLLIN != 0
}

// ensureScratch sizes the scratch batch like the caller's.
func (b *batchTUN) ensureScratch(bufs [][]byte) {
	if len(b.scratch) == len(bufs) && len(b.scratch[0]) >= len(bufs[0]) {
		return
	}
	b.scratch = make([][]byte, len(bufs))
	for i := range b.scratch {
		b.scratch[i] = make([]byte, len(bufs[0]))
	}
	b.sizes = make([]int, len(bufs))
}
