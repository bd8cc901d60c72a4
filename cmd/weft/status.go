package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftmesh/weft/api/client"
)

// status prints `weft status [peers|ipam|dns|kube] [--json]`.
func status(c *client.Client, g global, args []string) error {
	cx, cancel := ctx()
	defer cancel()
	st, err := c.Status(cx)
	if err != nil {
		return err
	}
	view := ""
	if len(args) > 0 {
		view = args[0]
	}
	switch view {
	case "":
		if g.json {
			return printOut(g, st, "")
		}
		printSummary(st)
		return nil
	case "peers":
		if g.json {
			return printOut(g, st.Peers, "")
		}
		printPeers(st)
		return nil
	case "ipam":
		if g.json {
			return printOut(g, st.IPAM, "")
		}
		printIPAM(st)
		printUnderlay(st)
		return nil
	case "underlay":
		if st.Underlay == nil {
			return fmt.Errorf("peer %s has no underlay pool (weft launch --underlay-range CIDR)", st.Name)
		}
		if g.json {
			return printOut(g, st.Underlay, "")
		}
		printUnderlay(st)
		return nil
	case "dns":
		if g.json {
			return printOut(g, st.DNS, "")
		}
		printDNS(st)
		return nil
	case "kube", "kubernetes", "nodes":
		if st.Kubernetes == nil {
			return fmt.Errorf("peer %s does not run in Kubernetes mode (weft launch --kubernetes, or --kubeconfig FILE)", st.Name)
		}
		if g.json {
			return printOut(g, st.Kubernetes, "")
		}
		printKube(st)
		return nil
	case "policy", "networkpolicy":
		if g.json {
			return printOut(g, st.Policy, "")
		}
		if !st.Policy.Enabled {
			fmt.Printf("NetworkPolicy: %s\n", policySummary(st.Policy))
			return nil
		}
		r, err := c.PolicyReport(cx)
		if err != nil {
			return err
		}
		printPolicyReport(os.Stdout, r)
		return nil
	}
	return usageError{fmt.Sprintf("unknown status view %q (peers, ipam, underlay, dns, kube, policy)", view)}
}

func printSummary(st *client.Status) {
	alive := 0
	for _, p := range st.Peers {
		if p.State == "alive" {
			alive++
		}
	}
	enc := "encrypted"
	if st.Insecure {
		enc = "INSECURE (no cluster secret, traffic in clear)"
	}
	fmt.Printf("        Name: %s (%s)\n", st.Name, st.ID)
	fmt.Printf("     Version: %s, up %s\n", st.Version, (time.Duration(st.UptimeSeconds) * time.Second).String())
	fmt.Printf("   Transport: %s, %s\n", st.Transport, enc)
	fmt.Printf("       Peers: %d known, %d alive\n", len(st.Peers), alive)
	fmt.Printf("        IPAM: %s, range %s; this peer owns %d, %d free, %d allocated\n",
		st.IPAM.Status, st.IPAM.Range, st.IPAM.Owned, st.IPAM.Free, st.IPAM.Allocated)
	fmt.Printf("         DNS: %s, %d entries\n", st.DNS.Domain, len(st.DNS.Entries))
	fmt.Printf("        Pods: %d\n", len(st.Pods))
	if k := st.Kubernetes; k != nil {
		fmt.Printf("  Kubernetes: %s\n", kubeSummary(k))
	}
	if st.Policy.Enabled {
		fmt.Printf("      Policy: %s\n", policySummary(st.Policy))
	}
	for _, p := range st.Problems {
		fmt.Printf("     Problem: %s\n", p)
	}
	fmt.Println()
	printPeers(st)
	if st.Kubernetes != nil && st.Kubernetes.Synced {
		fmt.Println()
		printNodes(st.Kubernetes)
	}
}

// kubeSummary is the Kubernetes line of the summary.
func kubeSummary(k *client.KubeStatus) string {
	if !k.Synced {
		return fmt.Sprintf("Node %s; the Node list is not loaded yet", k.Node)
	}
	ready := 0
	for _, n := range k.Nodes {
		if n.Ready {
			ready++
		}
	}
	network := "NetworkUnavailable not yet cleared"
	if k.NetworkAvailable {
		network = "network available"
	}
	return fmt.Sprintf("Node %s (%s); %d Nodes, %d ready; %d without a weft peer, %d peers without a Node",
		k.Node, network, len(k.Nodes), ready, len(k.NodesWithoutPeer), len(k.PeersWithoutNode))
}

// printKube is `weft status kube`: the summary line, the Nodes, and the
// peers that have no Node.
func printKube(st *client.Status) {
	k := st.Kubernetes
	fmt.Printf("Kubernetes: %s\n\n", kubeSummary(k))
	printNodes(k)
	if len(k.PeersWithoutNode) > 0 {
		fmt.Printf("\nPeers without a Node: %s\n", strings.Join(k.PeersWithoutNode, ", "))
	}
}

func printNodes(k *client.KubeStatus) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tINTERNAL-IP\tREADY\tNETWORK\tPEER\tPEER-STATE")
	for _, n := range k.Nodes {
		network := "unavailable"
		if n.NetworkAvailable {
			network = "available"
		}
		peer, state := n.Peer, n.PeerState
		if peer == "" {
			peer, state = "-", "no weft peer"
		}
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\n", n.Name, dash(n.InternalIP), n.Ready, network, peer, dash(state))
	}
	w.Flush()
}

func printPeers(st *client.Status) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tID\tADDRESS\tSTATE\tTRANSPORT\tBRIDGE\tHANDSHAKE\tRX/TX\tNOTE")
	for _, p := range st.Peers {
		note := p.Reason
		if p.Self {
			note = "(this peer)"
		}
		hs := "-"
		if p.LastHandshake != "" {
			if t, err := time.Parse(time.RFC3339, p.LastHandshake); err == nil {
				hs = time.Since(t).Round(time.Second).String() + " ago"
			}
		}
		rxtx := "-"
		if p.RxBytes+p.TxBytes > 0 {
			rxtx = fmt.Sprintf("%s/%s", bytesString(p.RxBytes), bytesString(p.TxBytes))
		}
		transport := dash(p.Transport)
		if p.Via != "" {
			transport += " via " + p.Via
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.ID, dash(p.Address), p.State,
			transport, dash(p.Bridge), hs, rxtx, note)
	}
	w.Flush()
}

func printIPAM(st *client.Status) {
	fmt.Printf("Range %s: %s\n\n", st.IPAM.Range, st.IPAM.Status)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OWNER\tID\tOWNED\tSHARE\tFREE\tREACHABLE")
	for _, o := range st.IPAM.Owners {
		fmt.Fprintf(w, "%s\t%s\t%d\t%.1f%%\t%d\t%v\n", dash(o.Name), o.ID, o.Owned, 100*o.Share, o.Free, o.Reachable)
	}
	w.Flush()
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "START\tEND\tSIZE\tOWNER\tFREE")
	for _, r := range st.IPAM.Ranges {
		owner := r.OwnerName
		if !r.Reachable {
			owner += " (unreachable)"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\n", r.Start, r.End, r.Size, owner, r.Free)
	}
	w.Flush()
}

// printUnderlay prints the underlay pool (macvlan pods), if any.
func printUnderlay(st *client.Status) {
	u := st.Underlay
	if u == nil {
		return
	}
	fmt.Printf("\nUnderlay range %s on %s (gateway %s, host %s): %s\n\n", u.Range, u.Master, dash(u.Gateway), dash(u.HostAddress), u.Status)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OWNER\tID\tOWNED\tSHARE\tFREE\tREACHABLE")
	for _, o := range u.Owners {
		fmt.Fprintf(w, "%s\t%s\t%d\t%.1f%%\t%d\t%v\n", dash(o.Name), o.ID, o.Owned, 100*o.Share, o.Free, o.Reachable)
	}
	w.Flush()
	if len(u.Taken) > 0 {
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TAKEN\tREASON")
		for _, t := range u.Taken {
			fmt.Fprintf(w, "%s\t%s\n", t.Address, t.Reason)
		}
		w.Flush()
	}
}

func printDNS(st *client.Status) {
	fmt.Printf("Domain %s, listening on %s\n\n", st.DNS.Domain, strings.Join(st.DNS.Listen, ", "))
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tADDRESS\tOWNER\tCONTAINER")
	for _, e := range st.DNS.Entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Name, e.Address, dash(e.OwnerName), dash(e.ContainerID))
	}
	w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
