package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftmesh/weft/api/client"
)

// supportedVersions are the CNI spec versions weft-cni speaks.
var supportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// Config is the network configuration weft-cni reads on stdin: the standard
// CNI fields plus weft's own. Unset fields keep DefaultConfig's values.
type Config struct {
	types.PluginConf

	Socket      string `json:"socket"`      // path of the peer's unix control socket
	Bridge      string `json:"bridge"`      // gateway bridge (holds the pods' gateway address); empty = the peer's answer, else "weft"
	MTU         int    `json:"mtu"`         // pod MTU in bytes; 0 = the peer's answer
	HairpinMode bool   `json:"hairpinMode"` // accepted for compatibility; routed pods always reach themselves through a service address
	DataDir     string `json:"dataDir"`     // weft state directory (pending-release spool lives here)
	LogFile     string `json:"logFile"`     // append JSON log lines here; empty = no log
	// Mode is the attachment: "" or "routed" (a routed veth, an address
	// of the pod range), or "macvlan" (a macvlan on the LAN, an address of
	// the peer's underlay range; macvlan.go).
	Mode string `json:"mode"`
	// Master is the macvlan parent device; "" = the interface holding the
	// peer's underlay address.
	Master string `json:"master"`

	// runtimeConfig (portMappings, dns, pod annotations) is ignored on
	// purpose: hostPort is the chained portmap plugin's job, and the pod's
	// DNS comes from the peer.
}

// Defaults that are not a field's zero value.
const (
	DefaultBridge  = "weft"          // gateway bridge when neither config nor peer names one
	DefaultDataDir = "/var/lib/weft" // weft's state directory
	minMTU         = 68              // bytes; the IPv4 minimum
	maxMTU         = 65535           // bytes; the veth maximum
	maxIfNameLen   = 15              // IFNAMSIZ-1
)

// DefaultConfig returns the configuration used for every field the network
// config leaves out.
func DefaultConfig() Config {
	return Config{
		PluginConf:  types.PluginConf{CNIVersion: "1.0.0", Name: "weft", Type: "weft-cni"},
		Socket:      client.DefaultSocket, // path
		Bridge:      "",                   // interface name; "" = ask the peer
		MTU:         0,                    // bytes; 0 = ask the peer
		HairpinMode: true,                 // on
		DataDir:     DefaultDataDir,       // path
		LogFile:     "",                   // path; "" = no log
	}
}

// ParseConfig decodes stdin over DefaultConfig and validates the result. Its
// errors are *types.Error with the CNI code that fits (6 decoding failure, 7
// invalid network config, 1 incompatible version).
func ParseConfig(data []byte) (*Config, error) {
	c := DefaultConfig()
	c.CNIVersion, c.Name = "", "" // must come from the input
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network config: "+err.Error(),
			"stdin must be one plugin's JSON config from the conflist")
	}
	if c.CNIVersion == "" {
		c.CNIVersion = "0.1.0" // what the spec says an absent version means
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult: "+err.Error(), "")
	}
	return &c, nil
}

// Validate reports the first invalid field as a *types.Error.
func (c *Config) Validate() error {
	if !slices.Contains(supportedVersions, c.CNIVersion) {
		return types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("cniVersion %q not supported", c.CNIVersion),
			"use one of "+strings.Join(supportedVersions, ", "))
	}
	invalid := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "fix the weft entry in the conflist (see 'weft setup-cni')")
	}
	switch {
	case c.Name == "":
		return invalid("network config has no name")
	case !filepath.IsAbs(c.Socket):
		return invalid("socket %q is not an absolute path", c.Socket)
	case c.Bridge != "" && !validIfName(c.Bridge):
		return invalid("bridge %q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", c.Bridge)
	case c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU):
		return invalid("mtu %d out of range %d..%d (0 = ask the peer)", c.MTU, minMTU, maxMTU)
	case !filepath.IsAbs(c.DataDir):
		return invalid("dataDir %q is not an absolute path", c.DataDir)
	case c.LogFile != "" && !filepath.IsAbs(c.LogFile):
		return invalid("logFile %q is not an absolute path", c.LogFile)
	case c.Mode != "" && c.Mode != ModeRouted && c.Mode != ModeMacvlan:
		return invalid("mode %q is unknown: want %q (the default) or %q", c.Mode, ModeRouted, ModeMacvlan)
	case c.Master != "" && c.Mode != ModeMacvlan:
		return invalid("master %q is only for \"mode\": %q", c.Master, ModeMacvlan)
	case c.Master != "" && !validIfName(c.Master):
		return invalid("master %q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", c.Master)
	}
	return nil
}

// validIfName follows the kernel's dev_valid_name.
func validIfName(s string) bool {
	if s == "" || len(s) > maxIfNameLen || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n\r\x00")
}

// podArgs are the CNI_ARGS weft reads; containerd always adds IgnoreUnknown=1
// and K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// parsePodName returns "POD.NAMESPACE", or "" when CNI_ARGS do not name a pod.
func parsePodName(cniArgs string) (string, error) {
	var a podArgs
	if err := types.LoadArgs(cniArgs, &a); err != nil {
		return "", types.NewError(types.ErrInvalidEnvironmentVariables, "parse CNI_ARGS: "+err.Error(),
			"pass IgnoreUnknown=1 with arguments weft does not know")
	}
	if a.K8S_POD_NAME == "" || a.K8S_POD_NAMESPACE == "" {
		return "", nil
	}
	return string(a.K8S_POD_NAME) + "." + string(a.K8S_POD_NAMESPACE), nil
}

// allocID is the allocation's key at the peer: the container ID for eth0,
// CONTAINERID:IFNAME for any other interface of the same container.
func allocID(containerID, ifName string) string {
	if ifName == "eth0" || ifName == "" {
		return containerID
	}
	return containerID + ":" + ifName
}
