package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/apitest"
	"github.com/weftmesh/weft/api/client"
)

func TestParsePortProto(t *testing.T) {
	for _, tt := range []struct {
		in    string
		port  int
		proto string
		bad   bool
	}{
		{"80/TCP", 80, "TCP", false}, {"53/udp", 53, "UDP", false}, {"8080", 8080, "TCP", false},
		{"icmp", 0, "ICMP", false}, {"x/TCP", 0, "", true}, {"70000/TCP", 0, "", true},
	} {
		port, proto, err := parsePortProto(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && (port != tt.port || proto != tt.proto)) {
			t.Errorf("parsePortProto(%q) = %d, %q, %v; want %d, %q, error %v", tt.in, port, proto, err, tt.port, tt.proto, tt.bad)
		}
	}
}

func TestPrintDrops(t *testing.T) {
	drops := apitest.PolicyDrops()
	now, _ := time.Parse(time.RFC3339Nano, drops[0].Time)
	drops = append(drops, client.PolicyDrop{Time: drops[0].Time, Count: 1, Direction: "egress", Pod: "x/c",
		SrcName: "x/c", DstName: "8.8.8.8", Protocol: "ICMP", Reason: "default deny"})
	var b bytes.Buffer
	printDrops(&b, drops, now.Add(5*time.Second))
	want := `LAST    COUNT  DIRECTION  SOURCE  DESTINATION  PORT    POLICY
5s ago  7      ingress    x/c     x/a          80/TCP  x/allow-b, x/deny-all (default deny)
5s ago  1      egress     x/c     8.8.8.8      ICMP    default deny
`
	if b.String() != want {
		t.Errorf("printDrops =\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	printDrops(&b, nil, now)
	if !strings.Contains(b.String(), "no dropped packets") {
		t.Errorf("printDrops(none) = %q", b.String())
	}
}

func TestPrintExplanation(t *testing.T) {
	ex := &client.Explanation{Src: "x/b", SrcIP: "10.32.0.3", Dst: "x/a", DstIP: "10.32.0.2", Port: 80, Protocol: "TCP", Allowed: true,
		Egress: client.PolicyDecision{Allowed: true, Text: "egress allowed: no policy selects the pod"},
		Ingress: client.PolicyDecision{Allowed: true, Text: "ingress allowed: by x/allow-b rule 0",
			Rules: []client.PolicyRule{{Policy: "x/allow-b", Direction: "ingress", Index: 0, Text: "from pods pod=b in namespace x; on TCP/80"}}}}
	var b bytes.Buffer
	printExplanation(&b, ex)
	want := `x/b (10.32.0.3) → x/a (10.32.0.2) 80/TCP: ALLOWED
  egress of x/b: egress allowed: no policy selects the pod
  ingress of x/a: ingress allowed: by x/allow-b rule 0
    x/allow-b ingress rule 0: from pods pod=b in namespace x; on TCP/80
`
	if b.String() != want {
		t.Errorf("printExplanation =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintPolicyReport(t *testing.T) {
	var b bytes.Buffer
	printPolicyReport(&b, apitest.PolicyReport())
	out := b.String()
	for _, w := range []string{
		"NetworkPolicy on node h1: synced; 2 policies, 9 pods with an IP in the cluster, 1 local pods isolated",
		"Problem: networkpolicy z/sctp",
		"x/a  10.32.0.2  x/allow-b, x/deny-all  open",
		"x/c  10.32.0.3  open                   open",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("weft status policy lacks %q:\n%s", w, out)
		}
	}
	if s := policySummary(client.PolicyStatus{}); !strings.Contains(s, "not enforced") {
		t.Errorf("policySummary(disabled) = %q", s)
	}
}
