package cni

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftmesh/weft/api/client"
)

var (
	// ErrBridgeMissing means the gateway bridge (the device holding the pods'
	// gateway address; pods are routed, not attached to it) does not exist yet.
	ErrBridgeMissing = errors.New("bridge missing")
	// ErrBadAllocation means the peer answered with an unusable allocation.
	ErrBadAllocation = errors.New("bad allocation from peer")
	// ErrCheckFailed means CHECK found the pod's network differs from prevResult.
	ErrCheckFailed = errors.New("check failed")
)

// cniError turns err into the *types.Error the runtime sees, keeping a code
// already chosen deeper down and classifying the peer's failures.
func cniError(code uint, msg string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(code, fmt.Sprintf("%s: %v", msg, err), "")
}

// peerError classifies a failed call to the peer: not running → try again
// later (11) with what to do; the peer busy or without space (503) → 11;
// anything else → internal (999).
func peerError(op, socket string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	if errors.Is(err, client.ErrNotRunning) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: weft peer not running at %s: start it with 'weft launch'", op, socket), err.Error())
	}
	var ae *client.APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: weft peer cannot serve pods yet: %s", op, ae.Message), "see 'weft status'")
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", op, err), "see 'weft status' and the peer's log")
}
