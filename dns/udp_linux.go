package dns

import "golang.org/x/sys/unix"

// msgTrunc is the recvmmsg flag of a datagram longer than its buffer.
const msgTrunc = unix.MSG_TRUNC
