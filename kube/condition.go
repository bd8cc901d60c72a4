package kube

// The NetworkUnavailable condition. Cloud route controllers (and the
// kubelet on some providers) create Nodes with NetworkUnavailable=True and
// the scheduler keeps pods off such a Node until the network plugin sets
// it False. Calico and Weave Net set it False, with their own reason, once
// their agent runs on the Node; weft does the same once its peer has
// joined the mesh and holds address space. The condition is patched on the
// status subresource with a strategic merge patch: conditions merge by
// type, so the Node's other conditions (the kubelet's) are left alone,
// and patching twice leaves the same condition.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The NetworkUnavailable=False condition that a weft peer sets.
const (
	NetworkReason  = "WeftIsUp"
	NetworkMessage = "weft is running on this node"
)

// SetNetworkAvailable sets the NetworkUnavailable condition of Node node
// to False (reason NetworkReason). It retries failed patches with
// exponential backoff (Config.RetryMin..RetryMax, jittered) until one
// succeeds or ctx is done; a Node that does not exist ends it at once
// with ErrNoNode. Idempotent.
func (c *Client) SetNetworkAvailable(ctx context.Context, node string) error {
	pause := c.cfg.RetryMin
	for {
		err := c.patchNetwork(ctx, node)
		if err == nil {
			return nil
		}
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("set NetworkUnavailable=False on Node %s: %w", node, ErrNoNode)
		}
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w (weft's ClusterRole needs patch on nodes/status)", err)
		}
		c.log.Debug("patch node condition failed; retrying", "node", node, "in", pause, "err", err)
		t := time.NewTimer(pause/2 + rand.N(pause/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("set NetworkUnavailable=False on Node %s: %w", node, err)
		case <-t.C:
		}
		pause = min(2*pause, c.cfg.RetryMax)
	}
}

func (c *Client) patchNetwork(ctx context.Context, node string) error {
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type:               corev1.NodeNetworkUnavailable,
		Status:             corev1.ConditionFalse,
		Reason:             NetworkReason,
		Message:            NetworkMessage,
		LastTransitionTime: now,
		LastHeartbeatTime:  now,
	}}}})
	if err != nil {
		return fmt.Errorf("encode node condition patch: %w", err)
	}
	return c.api.PatchNodeStatus(ctx, node, patch)
}
