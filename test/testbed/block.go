package testbed

// Blocking links between hosts with nftables inside the host namespaces:
// a firewall between two machines, a security group, a broken switch port
// that only one pair shares. Each host gets one table of its own,
// "testbed-block", with two sets (addresses it may not send to, and may
// not receive from) consulted by drop rules at the output and input hooks.
// Packets a blocked host sends are dropped before they leave, whatever
// they carry (gossip, WireGuard, VXLAN, probes); established conntrack
// flows are cut too. The table goes with the namespace.

import (
	"fmt"
	"os/exec"
	"strings"
)

const blockTable = `table ip testbed-block {
	set drop_out { type ipv4_addr; }
	set drop_in { type ipv4_addr; }
	chain output { type filter hook output priority -300; policy accept; ip daddr @drop_out drop; }
	chain input { type filter hook input priority -300; policy accept; ip saddr @drop_in drop; }
}
`

// nft runs an nft script in the host's namespace.
func (h *Host) nft(script string) error {
	cmd := exec.Command("nsenter", "--net="+h.NSPath(), "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", h.Name, err, out)
	}
	return nil
}

func (h *Host) blockSet(op, set string, o *Host) {
	h.bed.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	script := fmt.Sprintf("%s element ip testbed-block %s { %s }\n", op, set, o.Addr)
	if !h.blocking {
		script = blockTable + script
	}
	if err := h.nft(script); err != nil {
		h.bed.t.Fatal(err)
	}
	h.blocking = true
}

// BlockTo drops every packet h sends to o (a one-way block).
func (h *Host) BlockTo(o *Host) { h.blockSet("add", "drop_out", o) }

// UnblockTo undoes BlockTo.
func (h *Host) UnblockTo(o *Host) { h.blockSet("delete", "drop_out", o) }

// Block cuts the underlay between h and o in both directions, with rules
// in both hosts.
func (h *Host) Block(o *Host) {
	for _, p := range [][2]*Host{{h, o}, {o, h}} {
		p[0].blockSet("add", "drop_out", p[1])
		p[0].blockSet("add", "drop_in", p[1])
	}
}

// Unblock undoes Block.
func (h *Host) Unblock(o *Host) {
	for _, p := range [][2]*Host{{h, o}, {o, h}} {
		p[0].blockSet("delete", "drop_out", p[1])
		p[0].blockSet("delete", "drop_in", p[1])
	}
}
