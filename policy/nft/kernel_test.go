package nft_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/policy/nft"
)

// kernelApplier returns an Applier on a fresh network namespace and the
// namespace's path.
func kernelApplier(t *testing.T) (*nft.Applier, *nft.NetlinkConn, string) {
	t.Helper()
	testutil.Root(t)
	path := testutil.NetNS(t, testutil.Prefix("wpn"))
	conn, err := nft.NewNetlinkConn(path)
	if err != nil {
		t.Fatalf("NewNetlinkConn: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return nft.NewApplier(conn), conn, path
}

// TestKernelApply: a program applied to the kernel reads back as itself,
// a second apply (by a fresh Applier, which reads the kernel) changes
// nothing, and one pod's label change rewrites only that pod's chains and
// moves only its address.
func TestKernelApply(t *testing.T) {
	a, conn, path := kernelApplier(t)
	c := newCluster()
	prog := c.program(t, "weft-policy")
	if lines := mustApply(t, a, prog); len(lines) == 0 {
		t.Fatal("first Apply changed nothing")
	}
	readBack := func(want *nft.State) {
		t.Helper()
		got, err := conn.Read(prog.Table)
		if err != nil || got == nil {
			t.Fatalf("Read = %v, %v", got, err)
		}
		if d := want.Diff(got); d != "" {
			t.Fatalf("kernel differs from the program: %s", d)
		}
	}
	readBack(nft.StateOf(prog))

	if lines := mustApply(t, nft.NewApplier(conn), prog); len(lines) != 0 {
		t.Errorf("second Apply (reading the kernel) = %q; want no change", lines)
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("nsenter", "--net="+path, "nft", "list", "table", "ip", prog.Table).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		for _, want := range []string{"ip saddr vmap @egress", "ip daddr vmap @ingress", "type ipv4_addr . inet_service",
			`log prefix "weft-policy deny ingress x/a" group 6784`, "192.168.0.0/24, 192.168.2.0-192.168.7.6",
			"11.0.0.0-255.255.255.255", "10.32.1.10 . 8080", `comment "0.0.0.0/0 except 10.0.0.0/8"`,
			`accept comment 'x/web-from-clients ingress rule 0'"`} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nft list table lacks %q:\n%s", want, out)
			}
		}
	}

	// Label changes, each applied by a fresh Applier (reading the
	// kernel): only the pod's chains and its address in sets change, and
	// the sets of a policy that no longer selects a local pod go.
	// set finds the name of the set that a program p defines as def.
	set := func(p *policy.Program, def string) string {
		for _, s := range p.Sets {
			if s.Comment == def {
				return s.Name
			}
		}
		t.Fatalf("no set %q in\n%v", def, p)
		return ""
	}
	clients, named := "pods app=client in namespaces {}", "TCP/http of pods app=web in namespace x"
	webBlocks, dbBlocks := "192.168.0.0/16 except 192.168.1.0/24,192.168.7.7/32", "0.0.0.0/0 except 10.0.0.0/8"
	for _, ch := range []struct {
		pod, key, value string
		want            func(old, new *policy.Program) []string
	}{
		{"y/d", "app", "other", func(old, _ *policy.Program) []string {
			return []string{"delete element " + set(old, clients) + " { 10.32.0.12 }"}
		}},
		{"x/c", "app", "db", func(old, _ *policy.Program) []string { // remote: only set elements
			return []string{"delete element " + set(old, named) + " { 10.32.1.10 . 8080 }"}
		}},
		{"y/d", "app", "client", func(old, _ *policy.Program) []string {
			return []string{"add element " + set(old, clients) + " { 10.32.0.12 }"}
		}},
		{"x/b", "app", "web", func(old, _ *policy.Program) []string { // db-egress no longer selects a local pod
			rule := func(set, ports string) string {
				return "add rule ingress-10.32.0.11 meta l4proto tcp th dport " + ports + " ip saddr @" + set + ` accept comment "x/web-from-clients ingress rule 0"`
			}
			return []string{
				"flush chain ingress-10.32.0.11",
				rule(set(old, clients), "80-90"), rule(set(old, webBlocks), "80-90"),
				rule(set(old, clients), "8080"), rule(set(old, webBlocks), "8080"),
				`add rule ingress-10.32.0.11 limit rate 10/second burst 20 packets log prefix "weft-policy deny ingress x/b" group 6784`,
				"add rule ingress-10.32.0.11 counter drop",
				"delete element egress { 10.32.0.11 : jump egress-10.32.0.11 }",
				"flush chain egress-10.32.0.11",
				"delete chain egress-10.32.0.11",
				"delete set " + min(set(old, dbBlocks), set(old, named)),
				"delete set " + max(set(old, dbBlocks), set(old, named)),
			}
		}},
	} {
		c.pod(ch.pod).Labels[ch.key] = ch.value
		old := prog
		prog = c.program(t, "weft-policy")
		want := ch.want(old, prog)
		if got := mustApply(t, nft.NewApplier(conn), prog); !slices.Equal(got, want) {
			t.Errorf("%s %s=%s: Apply =\n%s\nwant\n%s", ch.pod, ch.key, ch.value, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		readBack(nft.StateOf(prog))
	}

	if err := a.Delete(prog.Table); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if s, err := conn.Read(prog.Table); s != nil || err != nil {
		t.Fatalf("Read after Delete = %v, %v; want no table", s, err)
	}
	if err := a.Delete(prog.Table); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

// TestKernelPlanSequences: sequences of generated programs applied to
// the kernel read back as the last program, and applying it again, from a
// fresh read, changes nothing: the kernel agrees with the fake's model of
// what it accepts, and Read decodes what Exec encodes.
func TestKernelPlanSequences(t *testing.T) {
	a, conn, _ := kernelApplier(t)
	rapid.Check(t, func(t *rapid.T) {
		for i := range rapid.IntRange(1, 4).Draw(t, "programs") {
			p := genProgram(t)
			if lines, err := a.Apply(p); err != nil {
				t.Fatalf("program %d: Apply: %v\n%s\n%v", i, err, strings.Join(lines, "\n"), p)
			}
			have, err := conn.Read(p.Table)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if d := nft.StateOf(p).Diff(have); d != "" {
				t.Fatalf("program %d: kernel differs: %s\n%v", i, d, p)
			}
			if lines, err := nft.NewApplier(conn).Apply(p); err != nil || len(lines) > 0 {
				t.Fatalf("program %d again = %q, %v; want no change", i, lines, err)
			}
		}
	})
}
