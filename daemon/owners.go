package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/weftmesh/weft/peer"
)

// Routes follow the ring, not liveness. While the ring says that peer P
// owns a range, every peer keeps its route to that range via P (and under
// WireGuard, P's WireGuard peer), whatever gossip says of P: a peer whose
// control plane is stopped, restarting or crashed still forwards for its
// pods, because its datapath (kernel state, or the `weft datapath`
// process) outlives it. Only a change of ownership moves routes: rmpeer,
// a reclaim, or P handing its space away.
//
// To route to an owner that gossip cannot describe (this peer restarted
// while P was down, so memberlist never met P), every peer keeps what it
// last knew of each ring owner in owners.json: name, underlay address,
// WireGuard key and port, bridge address, and when it was last seen up.

// ownerInfo is what this peer last knew of one ring owner.
type ownerInfo struct {
	Name     string     `json:"name"`
	Underlay netip.Addr `json:"underlay"`
	WGKey    string     `json:"wg_key,omitempty"`
	WGPort   uint16     `json:"wg_port,omitempty"`
	Bridge   netip.Addr `json:"bridge,omitzero"`
	// LastSeen is when the owner was last seen up, to the minute: it is
	// written at most once a minute per owner, not at every probe.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// ownersFile is what owners.json holds.
type ownersFile struct {
	Owners map[peer.ID]ownerInfo `json:"owners"`
}

// lastSeenStep is how stale a stored LastSeen may get before it is
// rewritten.
const lastSeenStep = time.Minute

// learnOwners returns the owner table for the ring owners: the newest that
// gossip says of each owner that is up, what was known before of the
// others, and nothing of peers that own no space. changed is false when
// only LastSeen moved by less than lastSeenStep, so a caller persists the
// table only on a real change.
//
// It runs at every sync pass, and the table rarely changes: it allocates
// a new one only when it does.
func learnOwners(known map[peer.ID]ownerInfo, self peer.ID, ranges map[peer.ID][]netip.Prefix, peers []peer.Info) (next map[peer.ID]ownerInfo, changed bool) {
	byID := make(map[peer.ID]int, len(peers)) // index in peers
	for i, p := range peers {
		if p.ID != 0 {
			byID[p.ID] = i
		}
	}
	learn := func(id peer.ID) (ownerInfo, bool) {
		old, had := known[id]
		i, ok := byID[id]
		var p peer.Info
		if ok {
			p = peers[i]
		}
		switch {
		case ok && p.State.Up() && p.Addr.IsValid():
			info := fillFrom(infoOf(p), old)
			info.LastSeen = old.LastSeen
			if p.LastSeen.Sub(old.LastSeen) >= lastSeenStep || !had {
				info.LastSeen = p.LastSeen.Truncate(time.Second)
			}
			return info, true
		case had:
			return old, true
		case ok && p.Addr.IsValid():
			return infoOf(p), true // down, but gossip still has its last meta
		}
		return ownerInfo{}, false
	}
	owner := func(id peer.ID, rs []netip.Prefix) bool { return id != self && id != 0 && len(rs) > 0 }
	same, n := true, 0
	for id, rs := range ranges {
		if !owner(id, rs) {
			continue
		}
		info, ok := learn(id)
		if !ok {
			continue
		}
		n++
		if old, had := known[id]; !had || old != info {
			same = false
			break
		}
	}
	if same && n == len(known) {
		return known, false
	}
	next = make(map[peer.ID]ownerInfo, len(ranges))
	for id, rs := range ranges {
		if !owner(id, rs) {
			continue
		}
		if info, ok := learn(id); ok {
			next[id] = info
		}
	}
	return next, !maps.Equal(next, known)
}

// sameButSeen reports whether two owner tables differ at most in LastSeen.
func sameButSeen(a, b map[peer.ID]ownerInfo) bool {
	return maps.EqualFunc(a, b, func(x, y ownerInfo) bool {
		x.LastSeen = y.LastSeen
		return x == y
	})
}

func infoOf(p peer.Info) ownerInfo {
	return ownerInfo{Name: p.Name, Underlay: p.Addr, WGKey: p.Meta.WGKey, WGPort: p.Meta.WGPort,
		Bridge: p.Meta.Bridge, LastSeen: p.LastSeen}
}

// fillFrom completes what gossip says of an owner that is up with what was
// known of it before: a peer that has just restarted publishes its bridge
// address only once its ring is loaded, and routing to it (vxlan routes go
// via the bridge) must not stop in that gap. What gossip does say wins.
func fillFrom(live, old ownerInfo) ownerInfo {
	if !live.Bridge.IsValid() {
		live.Bridge = old.Bridge
	}
	if live.WGKey == "" {
		live.WGKey = old.WGKey
	}
	if live.WGPort == 0 {
		live.WGPort = old.WGPort
	}
	return live
}

func loadOwners(dir string) (map[peer.ID]ownerInfo, error) {
	var f ownersFile
	b, err := os.ReadFile(filepath.Join(dir, "owners.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[peer.ID]ownerInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read owners: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read owners %s: %w (remove the file; it is rebuilt from gossip)", filepath.Join(dir, "owners.json"), err)
	}
	if f.Owners == nil {
		f.Owners = map[peer.ID]ownerInfo{}
	}
	return f.Owners, nil
}

func saveOwners(dir string, owners map[peer.ID]ownerInfo) error {
	return writeJSON(filepath.Join(dir, "owners.json"), ownersFile{Owners: owners})
}

// routePeers is every peer the datapath must reach: each ring owner other
// than self (described by gossip while it is up, else by what was last
// known of it), and each peer that is up even if it owns nothing yet. The
// result is sorted by ID.
func routePeers(self peer.ID, ranges map[peer.ID][]netip.Prefix, peers []peer.Info, known map[peer.ID]ownerInfo) []routePeer {
	out := map[peer.ID]routePeer{}
	for _, p := range peers {
		if p.ID == self || p.ID == 0 || !p.State.Up() {
			continue
		}
		out[p.ID] = routePeer{ID: p.ID, Info: fillFrom(infoOf(p), known[p.ID]), Ranges: ranges[p.ID]}
	}
	for _, p := range peers { // down, but gossip still has its last meta
		if _, ok := out[p.ID]; !ok && p.ID != self && p.ID != 0 && len(ranges[p.ID]) > 0 && known[p.ID].Name == "" {
			out[p.ID] = routePeer{ID: p.ID, Info: infoOf(p), Ranges: ranges[p.ID]}
		}
	}
	for id, rs := range ranges {
		if _, ok := out[id]; ok || id == self || len(rs) == 0 {
			continue
		}
		if info, ok := known[id]; ok {
			out[id] = routePeer{ID: id, Info: info, Ranges: rs}
		}
	}
	ids := slices.Sorted(maps.Keys(out))
	res := make([]routePeer, 0, len(ids))
	for _, id := range ids {
		if out[id].Info.Underlay.IsValid() {
			res = append(res, out[id])
		}
	}
	return res
}

// routePeer is one peer of the router's desired state.
type routePeer struct {
	ID     peer.ID
	Info   ownerInfo
	Ranges []netip.Prefix
}
