package policy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// TestConvertProblems: what the API would refuse or weft cannot express
// never matches, is named in a clear error, and leaves the rest of the
// policy (isolation included) in force; only an unreadable podSelector
// refuses the policy.
func TestConvertProblems(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		caps    Capabilities
		nilPol  bool
		is      error    // errors.Is of Convert's error; nil: no error
		msgs    []string // substrings of the error
		ingress []Rule   // checked when not nil
	}{
		{name: "fine", json: `{"spec":{"podSelector":{},"ingress":[{"from":[{"podSelector":{}}],"ports":[{"port":80}]}]}}`},
		{name: "SCTP without the kernel's", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"protocol":"SCTP","port":80},{"protocol":"TCP","port":81}]}]}}`,
			is: ErrUnsupported, msgs: []string{"ingress rule 0 port 0", "SCTP", "still isolates"}},
		{name: "SCTP with the kernel's", caps: Capabilities{SCTP: true}, json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"protocol":"SCTP","port":80}]}]}}`},
		{name: "unknown protocol", json: `{"spec":{"podSelector":{},"egress":[{"ports":[{"protocol":"ICMP"}]}]}}`,
			is: ErrInvalid, msgs: []string{"egress rule 0 port 0", `protocol "ICMP"`}},
		{name: "port out of range", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"port":70000}]}]}}`,
			is: ErrInvalid, msgs: []string{"port 70000"}},
		{name: "endPort without port", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"endPort":90}]}]}}`,
			is: ErrInvalid, msgs: []string{"endPort 90", "numeric port"}},
		{name: "endPort below port", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"port":90,"endPort":80}]}]}}`,
			is: ErrInvalid, msgs: []string{"endPort 80"}},
		{name: "endPort with a named port", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"port":"http","endPort":80}]}]}}`,
			is: ErrInvalid},
		{name: "bad port name", json: `{"spec":{"podSelector":{},"ingress":[{"ports":[{"port":"Not_A_Name"}]}]}}`,
			is: ErrInvalid, msgs: []string{`port name "Not_A_Name"`}},
		{name: "bad cidr", json: `{"spec":{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/33"}},{"podSelector":{}}]}]}}`,
			is: ErrInvalid, msgs: []string{"ingress rule 0 peer 0", `cidr "10.0.0.0/33"`}},
		{name: "empty peer", json: `{"spec":{"podSelector":{},"egress":[{"to":[{}]}]}}`,
			is: ErrInvalid, msgs: []string{"egress rule 0 peer 0", "empty peer"}},
		{name: "ipBlock with a selector", json: `{"spec":{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]}]}}`,
			is: ErrInvalid, msgs: []string{"ipBlock together with a selector"}},
		{name: "bad peer selector", json: `{"spec":{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchExpressions":[{"key":"a","operator":"Sometimes"}]}}]}]}}`,
			is: ErrInvalid, msgs: []string{"namespaceSelector"}},
		{name: "unknown policy type", json: `{"spec":{"podSelector":{},"policyTypes":["Ingress","Sideways"]}}`,
			is: ErrInvalid, msgs: []string{`"Sideways"`}},
		{name: "bad podSelector refuses the policy", json: `{"metadata":{"namespace":"x","name":"p"},"spec":{"podSelector":{"matchLabels":{"bad key!":"v"}}}}`,
			nilPol: true, is: ErrInvalid, msgs: []string{"networkpolicy x/p: podSelector"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o networkingv1.NetworkPolicy
			if err := json.Unmarshal([]byte(tt.json), &o); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			np, err := Convert(&o, tt.caps)
			if (np == nil) != tt.nilPol {
				t.Fatalf("Convert = %v, %v; want nil policy %v", np, err, tt.nilPol)
			}
			if tt.is == nil {
				if err != nil {
					t.Fatalf("Convert error = %v; want none", err)
				}
				return
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("Convert error = %v; want errors.Is %v", err, tt.is)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Convert error %q lacks %q", err, m)
				}
			}
			if np != nil && len(np.Problems) == 0 {
				t.Errorf("Problems empty; want the error's parts")
			}
		})
	}
}

// FuzzConvert: whatever object the API (or anyone) hands over, Convert
// does not panic, an error names ErrInvalid or ErrUnsupported, and a
// converted policy is something the evaluator and the compiler handle
// without panicking and agree on.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"namespace":"x","name":"p"},"spec":{"podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"pod":"b"}}}],"ports":[{"port":80}]}]}}`,
		`{"metadata":{"namespace":"x","name":"p"},"spec":{"podSelector":{"matchExpressions":[{"key":"pod","operator":"In","values":["a"]}]},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.32.0.0/16","except":["10.32.0.11/32"]}}],"ports":[{"port":"serve-80-tcp"},{"protocol":"UDP","port":80,"endPort":81}]}]}}`,
		`{"metadata":{"namespace":"y","name":"p"},"spec":{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{},"podSelector":{}},{}]}],"egress":[{"to":[{"ipBlock":{"cidr":"::/0"}}]}]}}`,
		`{"spec":{"podSelector":{},"ingress":[{"ports":[{"protocol":"SCTP","port":0,"endPort":-1}]}],"policyTypes":["Nope"]}}`,
		`{"spec":{"podSelector":{"matchLabels":{"":""}},"ingress":null}}`,
	} {
		f.Add([]byte(s))
	}
	m0 := fuzzWorld()
	f.Fuzz(func(t *testing.T, data []byte) {
		var o networkingv1.NetworkPolicy
		if json.Unmarshal(data, &o) != nil {
			return
		}
		np, err := Convert(&o, Capabilities{})
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Convert error %v wraps neither ErrInvalid nor ErrUnsupported", err)
		}
		if np == nil {
			if err == nil {
				t.Fatal("Convert = nil, nil")
			}
			return
		}
		np.Namespace = "x" // where the fuzz world's pods live
		m := NewModel(Snapshot{Namespaces: m0.namespaces, Pods: m0.pods, Policies: []*NetworkPolicy{np}, Nodes: m0.nodes})
		progs := m0.programs(t, m)
		for _, src := range m.Pods() {
			for _, dst := range append(m.Pods(), &Pod{IP: netip.MustParseAddr("10.32.1.1")}) {
				for _, pr := range []Protocol{TCP, UDP} {
					d := Endpoint{Pod: dst, IP: dst.IP}
					if dst.Name == "" {
						d = m.Endpoint(dst.IP)
					}
					v := Evaluate(m, PodEndpoint(src), d, 80, pr)
					if got, js := judgeCluster(progs, PodEndpoint(src), d, 80, pr); got != v.Allowed() {
						t.Fatalf("%v → %v: programs %v (%v); Evaluate %v", src.Name, d, got, js, v)
					}
				}
			}
		}
	})
}

// fuzzWorld is the e2e world cut down to namespace x and y.
func fuzzWorld() *world {
	w := e2eWorld()
	var pods []Pod
	for _, p := range w.pods {
		if p.Namespace != "z" {
			pods = append(pods, p)
		}
	}
	w.pods = pods
	return w
}
