package nflog

import (
	"encoding/binary"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/weftmesh/weft/internal/testutil"
)

// message builds a NFULNL_MSG_PACKET body.
func message(t *testing.T, attrs func(ae *netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0x1a, 0x80}, b...)
}

func TestParse(t *testing.T) {
	ts := make([]byte, 16)
	binary.BigEndian.PutUint64(ts, 1_800_000_000)
	binary.BigEndian.PutUint64(ts[8:], 250_000)
	b := message(t, func(ae *netlink.AttributeEncoder) {
		ae.Bytes(attrPacketHdr, []byte{0x08, 0x00, 2, 0})
		ae.Bytes(attrTimestamp, ts)
		ae.Uint32(attrInDev, 7)
		ae.Bytes(attrPayload, []byte{0x45, 0, 0, 28})
		ae.Bytes(attrPrefix, []byte("weft-policy deny ingress x/a\x00"))
	})
	p, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.Prefix != "weft-policy deny ingress x/a" || p.Proto != 0x0800 || p.InDev != 7 || p.OutDev != 0 ||
		len(p.Payload) != 4 || !p.Time.Equal(time.Unix(1_800_000_000, 250_000_000)) {
		t.Errorf("Parse = %+v", p)
	}
	for _, bad := range [][]byte{nil, {1, 2}, {2, 0, 0, 0, 200, 0, 1}} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%x) = nil error; want one", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{2, 0, 0x1a, 0x80, 8, 0, 10, 0, 'a', 'b', 0, 0})
	f.Add([]byte{2, 0, 0x1a, 0x80, 4, 0, 9, 0})
	f.Add([]byte{2, 0, 0, 0, 20, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err == nil && strings.ContainsRune(p.Prefix, 0) {
			t.Errorf("prefix %q keeps its NUL", p.Prefix)
		}
	})
}

// TestKernel: a packet that a `log group` rule logs arrives with its
// prefix and bytes, in a throwaway namespace.
func TestKernel(t *testing.T) {
	testutil.Root(t, "nft")
	ns := testutil.NetNS(t, testutil.Prefix("nfl"))
	cfg := DefaultConfig()
	cfg.Group, cfg.Batch, cfg.Flush = 77, 1, 10*time.Millisecond
	var c *Conn
	err := testutil.InNetNS(ns, func() error {
		out, err := exec.Command("nft", "add table ip t; add chain ip t out { type filter hook output priority 0; }; "+
			`add rule ip t out udp dport 9 log prefix "weft-test hello" group 77`).CombinedOutput()
		if err != nil {
			return &exec.ExitError{Stderr: out}
		}
		if c, err = Open(cfg); err != nil {
			return err
		}
		if _, err := Open(cfg); err == nil {
			t.Errorf("second Open of group 77 succeeded; want ErrBusy")
		}
		conn, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("ping"))
		return err
	})
	if err != nil {
		t.Fatalf("in netns: %v", err)
	}
	defer c.Close()
	got := make(chan []Packet, 1)
	go func() {
		for {
			ps, err := c.Read()
			if err != nil || len(ps) > 0 {
				got <- ps
				return
			}
		}
	}()
	select {
	case ps := <-got:
		if len(ps) == 0 {
			t.Fatalf("Read returned no packet")
		}
		p := ps[0]
		if p.Prefix != "weft-test hello" || len(p.Payload) < 28 || p.Payload[0]>>4 != 4 || p.Payload[9] != 17 {
			t.Errorf("logged packet %+v; want the prefix and an IPv4 UDP header", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no logged packet within 10 s")
	}
}

// TestCloseEndsBlockedRead: Close returns, and ends a Read that waits for
// packets that never come (a peer's shutdown waits for that Read).
func TestCloseEndsBlockedRead(t *testing.T) {
	testutil.Root(t)
	ns := testutil.NetNS(t, testutil.Prefix("nfc"))
	cfg := DefaultConfig()
	cfg.Group = 78
	var c *Conn
	if err := testutil.InNetNS(ns, func() error {
		var err error
		c, err = Open(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { _, err := c.Read(); read <- err }()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked while a Read waited")
	}
	select {
	case err := <-read:
		if err == nil {
			t.Error("Read after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}
