// Package nft applies a policy.Program to the kernel's nftables with
// github.com/google/nftables: one table of family ip per program, made
// to hold exactly the program in one netlink transaction, changing only
// what differs (a pod's chain, the elements of a set). It does not decide
// what the program says (policy compiles it), and it does not watch
// anything: the caller applies a program whenever its model changed, and
// calls Forget now and then so that the next Apply reads the kernel and
// repairs drift.
//
//	conn, _ := nft.NewNetlinkConn("")        // the host's namespace; a path for another
//	a := nft.NewApplier(conn)
//	prog, _ := policy.Compile(model, node)
//	lines, err := a.Apply(prog)              // transcript of what changed; none the second time
//	_ = a.Delete(prog.Table)                 // weft reset
//
// The pipeline: StateOf (what a program wants) and Conn.Read (what the
// kernel has) meet in Plan (state.go, plan.go), a pure diff into Ops,
// which Conn.Exec runs as one batch (netlink_linux.go, read_linux.go,
// exec_linux.go); Applier (apply.go) keeps what it applied so that a
// small change plans without a kernel read. nfttest has a fake Conn that
// refuses what the kernel would refuse.
package nft
