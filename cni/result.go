package cni

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftmesh/weft/api/client"
)

// resultPodIf is the pod end's index in the result's interfaces (the host
// end is 0).
const resultPodIf = 1

// buildResult is the spec result of an ADD in the newest format; the
// caller converts it to the config's version.
func buildResult(l *podLinks, netnsPath string, addr netip.Prefix, gw netip.Addr, dns *client.PodDNS) *current.Result {
	podIf := resultPodIf
	ipc := &current.IPConfig{Interface: &podIf, Address: *prefixToIPNet(addr)}
	var routes []*types.Route
	if gw.IsValid() {
		ipc.Gateway = net.IP(gw.AsSlice())
		routes = append(routes, &types.Route{Dst: *defaultDst(gw), GW: net.IP(gw.AsSlice())})
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: l.hostName, Mac: l.hostMAC.String()},
			{Name: l.podName, Mac: l.podMAC.String(), Sandbox: netnsPath},
		},
		IPs:    []*current.IPConfig{ipc},
		Routes: routes,
	}
	if dns != nil {
		res.DNS = types.DNS{Nameservers: dns.Nameservers, Domain: dns.Domain, Search: dns.Search}
	}
	return res
}
