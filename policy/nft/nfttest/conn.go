// Package nfttest provides a fake nft.Conn: tables held in memory as
// nft.State, each operation checked as the kernel checks it, and every
// executed batch recorded as transcript lines.
//
//	k := nfttest.NewConn()
//	a := nft.NewApplier(k)
//	_, _ = a.Apply(prog)
//	lines := k.Take() // "add table", "add chain forward { hook forward }", ...
package nfttest

import (
	"fmt"
	"sync"

	"github.com/weftmesh/weft/policy/nft"
)

// Conn is a fake nft.Conn. Safe for concurrent use.
type Conn struct {
	mu     sync.Mutex // guards following
	tables map[string]*nft.State
	lines  []string
	fail   error
}

var _ nft.Conn = (*Conn)(nil)

// NewConn returns a fake kernel without tables.
func NewConn() *Conn { return &Conn{tables: map[string]*nft.State{}} }

// Read implements nft.Conn.
func (k *Conn) Read(table string) (*nft.State, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.tables[table]
	if !ok {
		return nil, nil
	}
	return s.Clone(), nil
}

// Exec implements nft.Conn: all operations or none, as a transaction.
func (k *Conn) Exec(table string, ops []nft.Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return k.fail
	}
	s := nft.NewState()
	exists := false
	if have, ok := k.tables[table]; ok {
		s, exists = have.Clone(), true
	}
	for _, op := range ops {
		switch {
		case op.Kind == nft.AddTable:
			exists = true
		case !exists:
			return fmt.Errorf("%v: table %w", op, nft.ErrNotFound)
		}
		if err := s.Apply(op); err != nil {
			return err
		}
		if op.Kind == nft.DelTable {
			exists = false
		}
	}
	for _, op := range ops {
		k.lines = append(k.lines, op.String())
	}
	if exists {
		k.tables[table] = s
	} else {
		delete(k.tables, table)
	}
	return nil
}

// Fail makes Exec fail with err (nil: succeed again).
func (k *Conn) Fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fail = err
}

// Take returns the lines of the batches executed since the last Take.
func (k *Conn) Take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.lines
	k.lines = nil
	return l
}
