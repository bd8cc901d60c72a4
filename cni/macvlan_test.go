package cni

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/weftmesh/weft/api/client"
)

func TestParseMacvlanAllocation(t *testing.T) {
	good := client.Allocation{ID: "x", Address: "192.168.1.200/24", Gateway: "192.168.1.1", Pool: client.PoolUnderlay,
		Master: "eth0", HostAddress: "192.168.1.129", PodRange: "10.32.0.0/12"}
	for _, tc := range []struct {
		name string
		edit func(*client.Allocation)
		want string // "" = fine
	}{
		{"good", func(*client.Allocation) {}, ""},
		{"no gateway", func(a *client.Allocation) { a.Gateway = "" }, ""},
		{"routed answer", func(a *client.Allocation) { a.Pool = "" }, "pool"},
		{"gateway off the subnet", func(a *client.Allocation) { a.Gateway = "10.0.0.1" }, "gateway"},
		{"no host address", func(a *client.Allocation) { a.HostAddress = "" }, "macvlan interface"},
		{"host off the subnet", func(a *client.Allocation) { a.HostAddress = "10.1.1.1" }, "host address"},
		{"bad pod range", func(a *client.Allocation) { a.PodRange = "x" }, "pod range"},
		{"bad address", func(a *client.Allocation) { a.Address = "192.168.1.300/24" }, "address"},
	} {
		a := good
		tc.edit(&a)
		m, err := parseMacvlanAllocation(&a)
		if (tc.want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadAllocation))) {
			t.Errorf("%s: parseMacvlanAllocation = %+v, %v; want %q", tc.name, m, err, tc.want)
		}
	}
}

// macvlanBed is the kernel test bed plus the master device "eth0" (one
// end of a veth pair: macvlan needs an Ethernet parent; this kernel has no
// dummy driver).
func macvlanBed(t *testing.T) *testbed {
	b := newTestbed(t)
	inNS(t, b.host, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	return b
}

func TestMacvlanAddCheckDelDel(t *testing.T) {
	b := macvlanBed(t)
	pod := b.newPod(t)
	id := randomID()
	args := &skel.CmdArgs{ContainerID: id, Netns: pod, IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=mv", StdinData: b.conf("1.0.0", `,"mode":"macvlan"`)}
	out, err := b.run("ADD", args)
	if err != nil {
		t.Fatalf("ADD = %v", err)
	}
	allocs, dns, _ := b.peer.state()
	addr := allocs[id]
	if !strings.HasPrefix(addr, "192.168.77.") || dns["mv.default"].Address != strings.TrimSuffix(addr, "/24") {
		t.Fatalf("after ADD: allocs %v dns %v", allocs, dns)
	}
	res, err := current.NewResult([]byte(out))
	if err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	r := res.(*current.Result)
	if len(r.Interfaces) != 1 || r.Interfaces[0].Sandbox != pod || len(r.IPs) != 1 || r.IPs[0].Address.String() != addr ||
		len(r.Routes) != 2 || r.IPs[0].Gateway.String() != "192.168.77.1" {
		t.Fatalf("result %s", out)
	}
	inNS(t, pod, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		mv, ok := l.(*netlink.Macvlan)
		if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
			t.Errorf("pod's eth0 is %T %+v; want a macvlan in bridge mode", l, l)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, rt := range routes {
			dst := "default"
			if rt.Dst != nil {
				dst = rt.Dst.String()
			}
			got = append(got, dst+" via "+rt.Gw.String())
		}
		want := []string{"0.0.0.0/0 via 192.168.77.1", "10.32.0.0/12 via 192.168.77.2"}
		for _, w := range want {
			if !strings.Contains(strings.Join(got, ";"), w) {
				t.Errorf("pod routes %q lack %q", got, w)
			}
		}
		return nil
	})
	// CHECK with ADD's result as prevResult.
	check := *args
	check.StdinData = []byte(strings.TrimSuffix(string(b.conf("1.0.0", `,"mode":"macvlan"`)), "}") + `,"prevResult":` + out + "}")
	if _, err := b.run("CHECK", &check); err != nil {
		t.Fatalf("CHECK = %v", err)
	}
	// A routed CHECK of a macvlan pod fails.
	routed := check
	routed.StdinData = []byte(strings.Replace(string(check.StdinData), `,"mode":"macvlan"`, "", 1))
	if _, err := b.run("CHECK", &routed); err == nil {
		t.Fatalf("routed CHECK of a macvlan pod = nil; want an error")
	}
	for range 2 {
		if _, err := b.run("DEL", args); err != nil {
			t.Fatalf("DEL = %v", err)
		}
	}
	allocs, dns, released := b.peer.state()
	if _, ok := allocs[id]; ok || len(dns) != 0 || !contains(released, id) {
		t.Fatalf("after DEL: allocs %v dns %v released %v", allocs, dns, released)
	}
	inNS(t, pod, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Errorf("eth0 left in the pod after DEL")
		}
		return nil
	})
}

func TestMacvlanBadInput(t *testing.T) {
	b := macvlanBed(t)
	for _, tc := range []struct {
		name     string
		extra    string
		noPool   bool
		wantCode uint
		want     string
	}{
		{"unknown mode", `,"mode":"ipvlan"`, false, types.ErrInvalidNetworkConfig, "mode"},
		{"master missing", `,"mode":"macvlan","master":"nosuch0"`, false, types.ErrInvalidNetworkConfig, "nosuch0"},
		{"peer without underlay range", `,"mode":"macvlan"`, true, types.ErrInvalidNetworkConfig, "--underlay-range"},
		// Fails after the allocation: rolled back (released).
		{"eth0 taken in the pod", `,"mode":"macvlan"`, false, types.ErrInternal, "create macvlan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.peer.mu.Lock()
			b.peer.noPool = tc.noPool
			b.peer.mu.Unlock()
			pod := b.newPod(t)
			taken := strings.HasPrefix(tc.name, "eth0 taken")
			if taken {
				inNS(t, pod, func() error { return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}) })
			}
			id := randomID()
			_, err := b.run("ADD", &skel.CmdArgs{ContainerID: id, Netns: pod, IfName: "eth0", StdinData: b.conf("1.0.0", tc.extra)})
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.wantCode || !strings.Contains(te.Msg+te.Details, tc.want) {
				t.Fatalf("ADD = %v; want CNI error %d naming %q", err, tc.wantCode, tc.want)
			}
			allocs, _, released := b.peer.state()
			if allocs[id] != "" {
				t.Errorf("allocation left: %v", allocs)
			}
			if taken {
				if !contains(released, id) {
					t.Errorf("the allocation was not released: %v", released)
				}
				inNS(t, pod, func() error {
					if l, err := netlink.LinkByName("eth0"); err != nil || l.Type() != "bridge" {
						t.Errorf("the pod's own eth0 was touched: %v %v", l, err)
					}
					return nil
				})
				return
			}
			inNS(t, pod, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Errorf("eth0 left in the pod")
				}
				return nil
			})
		})
	}
}
