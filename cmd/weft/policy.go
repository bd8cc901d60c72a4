package main

// `weft policy drops|explain` and `weft status policy`: NetworkPolicy as
// the peer enforces it on its node (Kubernetes mode).

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftmesh/weft/api/client"
)

func policyCmd(c *client.Client, g global, args []string) error {
	if len(args) == 0 {
		return usageError{"weft policy drops | explain SRC DST PORT/PROTO"}
	}
	cx, cancel := ctx()
	defer cancel()
	switch args[0] {
	case "drops":
		if len(args) != 1 {
			return usageError{"weft policy drops takes no arguments"}
		}
		drops, err := c.PolicyDrops(cx)
		if err != nil {
			return err
		}
		if g.json {
			return printOut(g, drops, "")
		}
		printDrops(os.Stdout, drops, time.Now())
		return nil
	case "explain":
		if len(args) != 4 {
			return usageError{"weft policy explain SRC DST PORT/PROTO (SRC, DST: namespace/pod or an IP address; e.g. x/b y/a 80/TCP)"}
		}
		port, proto, err := parsePortProto(args[3])
		if err != nil {
			return usageError{err.Error()}
		}
		ex, err := c.PolicyExplain(cx, client.ExplainRequest{Src: args[1], Dst: args[2], Port: port, Protocol: proto})
		if err != nil {
			return err
		}
		if g.json {
			return printOut(g, ex, "")
		}
		printExplanation(os.Stdout, ex)
		return nil
	}
	return usageError{fmt.Sprintf("unknown policy command %q (drops, explain)", args[0])}
}

// parsePortProto reads PORT/PROTO, PORT (TCP) or PROTO (ICMP, or any
// port).
func parsePortProto(s string) (int, string, error) {
	p, proto, ok := strings.Cut(s, "/")
	if !ok {
		if _, err := strconv.Atoi(s); err != nil {
			return 0, strings.ToUpper(s), nil
		}
		proto = "TCP"
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return 0, "", fmt.Errorf("port %q: want PORT/PROTO, e.g. 80/TCP or 53/UDP", s)
	}
	return n, strings.ToUpper(proto), nil
}

func printExplanation(w io.Writer, ex *client.Explanation) {
	verdict := "DENIED"
	if ex.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(w, "%s → %s %d/%s: %s\n", endpointText(ex.Src, ex.SrcIP), endpointText(ex.Dst, ex.DstIP), ex.Port, ex.Protocol, verdict)
	for _, side := range []struct {
		name string
		d    client.PolicyDecision
	}{{"egress of " + ex.Src, ex.Egress}, {"ingress of " + ex.Dst, ex.Ingress}} {
		fmt.Fprintf(w, "  %s: %s\n", side.name, side.d.Text)
		for _, r := range side.d.Rules {
			fmt.Fprintf(w, "    %s %s rule %d: %s\n", r.Policy, r.Direction, r.Index, r.Text)
		}
	}
}

func endpointText(name, ip string) string {
	if ip == "" || name == ip || strings.Contains(name, ip) {
		return name
	}
	return name + " (" + ip + ")"
}

func printDrops(w io.Writer, drops []client.PolicyDrop, now time.Time) {
	if len(drops) == 0 {
		fmt.Fprintln(w, "no dropped packets logged since the peer started")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST\tCOUNT\tDIRECTION\tSOURCE\tDESTINATION\tPORT\tPOLICY")
	for _, d := range drops {
		ago := "-"
		if t, err := time.Parse(time.RFC3339Nano, d.Time); err == nil {
			ago = now.Sub(t).Round(time.Second).String() + " ago"
		}
		pol := "default deny"
		if len(d.Policies) > 0 {
			pol = strings.Join(d.Policies, ", ") + " (default deny)"
		}
		port := d.Protocol
		if d.Port != 0 {
			port = fmt.Sprintf("%d/%s", d.Port, d.Protocol)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", ago, d.Count, d.Direction, d.SrcName, d.DstName, port, pol)
	}
	tw.Flush()
}

// policySummary is the NetworkPolicy line of the status summary.
func policySummary(p client.PolicyStatus) string {
	if !p.Enabled {
		return "not enforced (Kubernetes mode only)"
	}
	synced := "synced"
	if !p.Synced {
		synced = "NOT synced (the kernel does not reflect every object yet)"
	}
	return fmt.Sprintf("%s; %d policies, %d pods with an IP in the cluster, %d local pods isolated", synced, p.Policies, p.Pods, p.Isolated)
}

// printPolicyReport is `weft status policy`.
func printPolicyReport(w io.Writer, r *client.PolicyReport) {
	fmt.Fprintf(w, "NetworkPolicy on node %s: %s\n", r.Node, policySummary(r.Status))
	if r.AppliedAt != "" {
		fmt.Fprintf(w, "Last applied %s (%d changes, %.1f ms); %d connections cut by changes, %d drops logged\n",
			r.AppliedAt, r.Changes, r.ApplyMillis, r.CutFlows, r.Drops)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "Error: %s\n", r.Error)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "Problem: %s\n", p)
	}
	if len(r.Pods) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tADDRESS\tINGRESS\tEGRESS")
	for _, p := range r.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Pod, p.Address, isolation(p.Ingress), isolation(p.Egress))
	}
	tw.Flush()
}

func isolation(policies []string) string {
	if len(policies) == 0 {
		return "open"
	}
	return strings.Join(policies, ", ")
}
