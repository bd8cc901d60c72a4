package router_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/weftmesh/weft/router"
)

// TestDiffRoutes checks the route diff against a model of the kernel: a
// list of routes, several possibly to one destination, in any order.
// Deleting del and then replacing set (RouteReplace overwrites the one
// route left to its destination) leaves exactly want, and the diff is
// minimal: a wanted route already there is neither deleted nor set, and
// only the extra routes to a destination are deleted.
func TestDiffRoutes(t *testing.T) {
	dsts := []netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.0.0/16"), pfx("10.1.0.0/24"),
		pfx("10.1.0.1/32"), pfx("10.2.0.0/16"), pfx("10.3.0.1/32")}
	genRoute := func(t *rapid.T, label string, dst netip.Prefix) router.Route {
		r := router.Route{Dst: dst}
		switch rapid.IntRange(0, 3).Draw(t, label) {
		case 0:
			r.Unreachable = true
		case 1:
			r.Dev, r.Src = "weft", netip.MustParseAddr("10.0.0.1")
		case 2:
			r.Dev, r.Gw, r.OnLink = "vxlan-weft", netip.MustParseAddr("10.1.0.1"), true
		case 3:
			r.Dev, r.Gw, r.OnLink = "vxlan-weft", netip.MustParseAddr("10.2.0.1"), true
		}
		return r
	}
	rapid.Check(t, func(t *rapid.T) {
		var have, want []router.Route
		for i := range rapid.IntRange(0, 10).Draw(t, "have") {
			d := dsts[rapid.IntRange(0, len(dsts)-1).Draw(t, fmt.Sprint("haveDst", i))]
			have = append(have, genRoute(t, fmt.Sprint("haveRoute", i), d))
		}
		for i, d := range dsts { // a plan: sorted, one route per destination
			if rapid.Bool().Draw(t, fmt.Sprint("wanted", i)) {
				want = append(want, genRoute(t, fmt.Sprint("wantRoute", i), d))
			}
		}
		if rapid.Bool().Draw(t, "haveIsAPlan") {
			have = slices.Clone(want)
			if len(have) > 0 {
				i := rapid.IntRange(0, len(have)-1).Draw(t, "changed")
				have[i] = genRoute(t, "changedRoute", have[i].Dst)
				have = slices.Delete(have, 0, rapid.IntRange(0, 1).Draw(t, "dropFirst"))
			}
		}
		orig := slices.Clone(have)
		del, set := router.DiffRoutes(have, want)
		if !slices.Equal(have, orig) {
			t.Fatalf("have modified: %v, was %v", have, orig)
		}

		kernel := slices.Clone(have)
		for _, r := range del {
			i := slices.Index(kernel, r)
			if i < 0 {
				t.Fatalf("deletes %v, not in %v", r, kernel)
			}
			kernel = slices.Delete(kernel, i, i+1)
		}
		for _, r := range set {
			i := slices.IndexFunc(kernel, func(k router.Route) bool { return k.Dst == r.Dst })
			if i >= 0 && slices.ContainsFunc(kernel[i+1:], func(k router.Route) bool { return k.Dst == r.Dst }) {
				t.Fatalf("sets %v with several routes to it left: %v", r, kernel)
			}
			if i < 0 {
				kernel = append(kernel, r)
			} else {
				kernel[i] = r
			}
		}
		slices.SortFunc(kernel, func(a, b router.Route) int {
			return a.Dst.Addr().Compare(b.Dst.Addr())*64 + a.Dst.Bits() - b.Dst.Bits()
		})
		if !slices.Equal(kernel, want) {
			t.Fatalf("have %v\nwant %v\ndel %v set %v\nleaves %v", have, want, del, set, kernel)
		}

		wantSet, wantDel := 0, len(have)
		for _, w := range want {
			if !slices.Contains(have, w) {
				wantSet++
			}
			if slices.ContainsFunc(have, func(h router.Route) bool { return h.Dst == w.Dst }) {
				wantDel-- // one route to a wanted destination stays
			}
		}
		if len(set) != wantSet || len(del) != wantDel {
			t.Fatalf("have %v\nwant %v\ndel %v set %v: want %d deleted, %d set", have, want, del, set, wantDel, wantSet)
		}
	})
}

// TestDiffRoutesKeepsTheEqualRoute: of several routes to a wanted
// destination, the one equal to the wanted route stays, wherever it is.
func TestDiffRoutesKeepsTheEqualRoute(t *testing.T) {
	w := router.Route{Dst: pfx("10.1.0.0/16"), Dev: "weft", Src: netip.MustParseAddr("10.0.0.1")}
	other := router.Route{Dst: w.Dst, Dev: "eth0", Gw: netip.MustParseAddr("192.168.1.1")}
	unwanted := router.Route{Dst: pfx("10.9.0.0/16"), Dev: "weft"}
	del, set := router.DiffRoutes([]router.Route{other, unwanted, w}, []router.Route{w})
	if !slices.Equal(del, []router.Route{other, unwanted}) || len(set) != 0 {
		t.Fatalf("del %v set %v; want del [other unwanted], set none", del, set)
	}
	del, set = router.DiffRoutes([]router.Route{other, other}, []router.Route{w})
	if !slices.Equal(del, []router.Route{other}) || !slices.Equal(set, []router.Route{w}) {
		t.Fatalf("del %v set %v; want one of the two deleted, the other replaced", del, set)
	}
	// A destination wanted twice: the last wanted route counts, as in the
	// kernel after replacing them in order.
	del, set = router.DiffRoutes([]router.Route{w}, []router.Route{w, other})
	if len(del) != 0 || !slices.Equal(set, []router.Route{other}) {
		t.Fatalf("del %v set %v; want none deleted, the last wanted set", del, set)
	}
}

// TestOneRoutePerDestination: when two sources of routes name one
// destination (a local range a peer also claims, in a ring change; two
// peers claiming one range), the plan holds one route to it, the first
// added: the local range's, then the peer first in ID order.
func TestOneRoutePerDestination(t *testing.T) {
	f := newFixture(t, router.Options{})
	cfg := testConfig(router.TransportVXLAN, true)
	cfg.Peers[0].Ranges = append(cfg.Peers[0].Ranges, pfx("10.32.0.0/14")) // ours too (Local)
	cfg.Peers[1].Ranges = append(cfg.Peers[1].Ranges, cfg.Peers[0].Ranges[0])
	f.set(t, cfg)
	var got []string
	for _, r := range f.k.Routes() {
		if strings.HasPrefix(r, "10.32.0.0/14 ") || strings.HasPrefix(r, cfg.Peers[0].Ranges[0].String()+" ") {
			got = append(got, r)
		}
	}
	want := []string{
		"10.32.0.0/14 dev weft src 10.32.0.1",
		cfg.Peers[0].Ranges[0].String() + " via " + cfg.Peers[0].Bridge.String() + " dev " + cfg.VXIface + " onlink src 10.32.0.1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("routes %q\nwant %q", got, want)
	}
}

// TestOnePerDst checks a plan's route list against a stable sort: sorted by
// destination, one route to each, the first given of those to it.
func TestOnePerDst(t *testing.T) {
	dsts := []netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.0.0/16"), pfx("10.1.0.0/24"),
		pfx("10.1.0.1/32"), pfx("10.2.0.0/16"), pfx("10.3.0.1/32")}
	rapid.Check(t, func(t *rapid.T) {
		var in []router.Route
		for i := range rapid.IntRange(0, 20).Draw(t, "n") {
			in = append(in, router.Route{Dst: dsts[rapid.IntRange(0, len(dsts)-1).Draw(t, fmt.Sprint("dst", i))],
				Dev: fmt.Sprint("dev", i)}) // Dev tells the routes to one destination apart
		}
		if rapid.Bool().Draw(t, "sorted") {
			slices.SortStableFunc(in, func(a, b router.Route) int {
				return a.Dst.Addr().Compare(b.Dst.Addr())*64 + a.Dst.Bits() - b.Dst.Bits()
			})
		}
		want := slices.Clone(in)
		slices.SortStableFunc(want, func(a, b router.Route) int {
			return a.Dst.Addr().Compare(b.Dst.Addr())*64 + a.Dst.Bits() - b.Dst.Bits()
		})
		want = slices.CompactFunc(want, func(a, b router.Route) bool { return a.Dst == b.Dst })
		if got := router.OnePerDst(slices.Clone(in)); !slices.Equal(got, want) {
			t.Fatalf("onePerDst(%v)\n = %v\nwant %v", in, got, want)
		}
	})
}
