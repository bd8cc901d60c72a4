package nft

import (
	"fmt"
	"sync"

	"github.com/weftmesh/weft/policy"
)

// Conn is the kernel seam: it reads and changes nftables tables of family
// ip. Implementations: NetlinkConn (google/nftables), nfttest.Conn.
// Calls may block on netlink; the Applier makes one at a time.
type Conn interface {
	// Read returns what table holds, or nil and no error when there is no
	// such table.
	Read(table string) (*State, error)
	// Exec runs ops on table in one transaction: all or nothing.
	Exec(table string, ops []Op) error
}

// Applier brings tables to what Programs want, changing only the
// difference. It remembers what it last applied to each table and plans
// against that, so that a small change costs no kernel read; Forget makes
// the next Apply read the kernel again (a resync repairs drift). Safe for
// concurrent use; Applies are serialised.
type Applier struct {
	conn Conn

	mu   sync.Mutex        // guards following
	have map[string]*State // by table; absent: read the kernel first
}

// NewApplier returns an Applier over conn.
func NewApplier(conn Conn) *Applier {
	return &Applier{conn: conn, have: map[string]*State{}}
}

// Apply makes p's table hold exactly p in one transaction and returns the
// operations it ran, as transcript lines (none when nothing differed).
// After an error the table is as it was, and the next Apply reads it.
// The Applier keeps p to plan the next change: p must not change later.
func (a *Applier) Apply(p *policy.Program) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	have, known := a.have[p.Table]
	if !known {
		var err error
		if have, err = a.conn.Read(p.Table); err != nil {
			return nil, fmt.Errorf("nft read table ip %s: %w", p.Table, err)
		}
	}
	ops := Plan(have, p)
	if len(ops) == 0 {
		a.have[p.Table] = have
		return nil, nil
	}
	lines := make([]string, len(ops))
	for i, o := range ops {
		lines[i] = o.String()
	}
	if err := a.conn.Exec(p.Table, ops); err != nil {
		delete(a.have, p.Table)
		return lines, fmt.Errorf("nft apply table ip %s (%d operations): %w", p.Table, len(ops), err)
	}
	a.have[p.Table] = StateOf(p)
	return lines, nil
}

// Forget makes the next Apply to table read the kernel.
func (a *Applier) Forget(table string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.have, table)
}

// Delete removes table; a missing table is not an error.
func (a *Applier) Delete(table string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.have, table)
	have, err := a.conn.Read(table)
	if err != nil {
		return fmt.Errorf("nft read table ip %s: %w", table, err)
	}
	if have == nil {
		return nil
	}
	if err := a.conn.Exec(table, []Op{{Kind: DelTable}}); err != nil {
		return fmt.Errorf("nft delete table ip %s: %w", table, err)
	}
	return nil
}
