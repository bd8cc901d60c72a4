package policy

// Address ranges: an ipBlock is a CIDR with holes (except), which an
// nftables interval set holds as disjoint ranges. The kernel refuses
// overlapping intervals, so the ranges of one set are merged first.

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// addrRange is the inclusive IPv4 range lo..hi.
type addrRange struct{ lo, hi uint32 }

func addrU32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func u32addr(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// prefixRange is the range of IPv4 prefix p.
func prefixRange(p netip.Prefix) addrRange {
	lo := addrU32(p.Masked().Addr())
	return addrRange{lo, lo | (^uint32(0) >> p.Bits())}
}

// blockRanges is b as disjoint ranges; nil when b is not IPv4.
func blockRanges(b *Block) []addrRange {
	if !b.CIDR.Addr().Is4() {
		return nil
	}
	rs := []addrRange{prefixRange(b.CIDR)}
	for _, e := range b.Except {
		if !e.Addr().Is4() {
			continue
		}
		rs = subtract(rs, prefixRange(e))
	}
	return rs
}

// subtract removes x from the disjoint ranges rs.
func subtract(rs []addrRange, x addrRange) []addrRange {
	var out []addrRange
	for _, r := range rs {
		if x.hi < r.lo || x.lo > r.hi {
			out = append(out, r)
			continue
		}
		if x.lo > r.lo {
			out = append(out, addrRange{r.lo, x.lo - 1})
		}
		if x.hi < r.hi {
			out = append(out, addrRange{x.hi + 1, r.hi})
		}
	}
	return out
}

// mergeRanges sorts rs and joins overlapping and adjacent ranges.
func mergeRanges(rs []addrRange) []addrRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b addrRange) int { return cmp.Compare(a.lo, b.lo) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || r.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}
