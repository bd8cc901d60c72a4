package cni

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	def := DefaultConfig()
	tests := []struct {
		name     string
		in       string
		want     func(c *Config) // edits DefaultConfig into the expected value
		wantCode uint            // 0 = no error
	}{
		{name: "minimal", in: `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}`, want: func(*Config) {}},
		{name: "0.4.0", in: `{"cniVersion":"0.4.0","name":"weft","type":"weft-cni"}`, want: func(c *Config) { c.CNIVersion = "0.4.0" }},
		{name: "1.1.0", in: `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni"}`, want: func(c *Config) { c.CNIVersion = "1.1.0" }},
		{name: "overrides", in: `{"cniVersion":"1.0.0","name":"n","type":"weft-cni","socket":"/tmp/w.sock","bridge":"br9","mtu":1400,"hairpinMode":false,"dataDir":"/tmp/d","logFile":"/tmp/l.json"}`,
			want: func(c *Config) {
				c.Name, c.Socket, c.Bridge, c.MTU, c.HairpinMode, c.DataDir, c.LogFile = "n", "/tmp/w.sock", "br9", 1400, false, "/tmp/d", "/tmp/l.json"
			}},
		{name: "containerd extras ignored", in: `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"HostPort":1}],"dns":{}}}`,
			want: func(c *Config) { c.Capabilities = map[string]bool{"portMappings": true} }},
		{name: "malformed", in: `{"cniVersion":`, wantCode: types.ErrDecodingFailure},
		{name: "wrong type", in: `{"cniVersion":"1.0.0","name":"weft","mtu":"big"}`, wantCode: types.ErrDecodingFailure},
		{name: "unknown version", in: `{"cniVersion":"9.9.9","name":"weft"}`, wantCode: types.ErrIncompatibleCNIVersion},
		{name: "old version", in: `{"cniVersion":"0.3.1","name":"weft"}`, wantCode: types.ErrIncompatibleCNIVersion},
		{name: "no version", in: `{"name":"weft"}`, wantCode: types.ErrIncompatibleCNIVersion},
		{name: "no name", in: `{"cniVersion":"1.0.0"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "relative socket", in: `{"cniVersion":"1.0.0","name":"weft","socket":"weft.sock"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "long bridge", in: `{"cniVersion":"1.0.0","name":"weft","bridge":"abcdefghijklmnop"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "slash bridge", in: `{"cniVersion":"1.0.0","name":"weft","bridge":"a/b"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "tiny mtu", in: `{"cniVersion":"1.0.0","name":"weft","mtu":10}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "huge mtu", in: `{"cniVersion":"1.0.0","name":"weft","mtu":70000}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "relative dataDir", in: `{"cniVersion":"1.0.0","name":"weft","dataDir":"data"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "relative logFile", in: `{"cniVersion":"1.0.0","name":"weft","logFile":"log"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "macvlan", in: `{"cniVersion":"1.0.0","name":"weft","mode":"macvlan","master":"eth1"}`,
			want: func(c *Config) { c.Mode, c.Master = ModeMacvlan, "eth1" }},
		{name: "routed", in: `{"cniVersion":"1.0.0","name":"weft","mode":"routed"}`, want: func(c *Config) { c.Mode = ModeRouted }},
		{name: "unknown mode", in: `{"cniVersion":"1.0.0","name":"weft","mode":"ipvlan"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "master without macvlan", in: `{"cniVersion":"1.0.0","name":"weft","master":"eth0"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad master", in: `{"cniVersion":"1.0.0","name":"weft","mode":"macvlan","master":"a b"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad prevResult", in: `{"cniVersion":"1.0.0","name":"weft","prevResult":{"ips":"x"}}`, wantCode: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if tt.wantCode != 0 {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != tt.wantCode {
					t.Fatalf("ParseConfig(%s) = %v; want CNI error code %d", tt.in, err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v", tt.in, err)
			}
			want := def
			want.CNIVersion = "1.0.0"
			tt.want(&want)
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("ParseConfig(%s) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseConfigPrevResult(t *testing.T) {
	in := `{"cniVersion":"1.0.0","name":"weft","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"10.32.0.5/12","gateway":"10.32.0.1"}]}}`
	c, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatalf("ParseConfig = %v", err)
	}
	if c.PrevResult == nil {
		t.Fatal("PrevResult = nil; want parsed")
	}
}

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
}

func TestParsePodName(t *testing.T) {
	tests := []struct {
		name, args, want string
		wantErr          bool
	}{
		{name: "containerd", args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=crt-ns;K8S_POD_NAME=crt-pod-1;K8S_POD_INFRA_CONTAINER_ID=b02;K8S_POD_UID=u", want: "crt-pod-1.crt-ns"},
		{name: "empty", args: "", want: ""},
		{name: "only name", args: "K8S_POD_NAME=a", want: ""},
		{name: "unknown ignored", args: "IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=a;K8S_POD_NAMESPACE=b", want: "a.b"},
		{name: "unknown refused", args: "FOO=bar", wantErr: true},
		{name: "garbage", args: "novalue", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePodName(tt.args)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parsePodName(%q) = %q, %v; want %q, err %v", tt.args, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := allocID("abc", "eth0"); got != "abc" {
		t.Errorf("allocID(abc, eth0) = %q; want abc", got)
	}
	if got := allocID("abc", "net1"); got != "abc:net1" {
		t.Errorf("allocID(abc, net1) = %q; want abc:net1", got)
	}
	a, b := hostVethName("abc", "eth0"), hostVethName("abc", "net1")
	if len(a) != 13 || !strings.HasPrefix(a, "wf") || a == b || a != hostVethName("abc", "eth0") {
		t.Errorf("hostVethName = %q, %q; want distinct stable wf+11 hex", a, b)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}`,
		`{"cniVersion":"1.1.0","name":"weft","socket":"/run/weft/weft.sock","bridge":"weft","mtu":1410,"hairpinMode":true,"dataDir":"/var/lib/weft","logFile":"/var/log/weft-cni.json"}`,
		`{"cniVersion":"0.4.0","name":"weft","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":0,"address":"10.32.0.5/12"}],"routes":[{"dst":"0.0.0.0/0"}]}}`,
		`{"cniVersion":"1.1.0","name":"weft","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"cniVersion":"1.0.0","name":"weft","runtimeConfig":{"portMappings":[{"HostPort":1}]}}`,
		`{"cniVersion":"1.0.0","name":"weft","mode":"macvlan","master":"eth0"}`,
		`{"cniVersion":"1.0.0","name":"weft","mode":"ipvlan"}`,
		`{`, `null`, `[]`, `{"mtu":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 || te.Msg == "" {
				t.Fatalf("ParseConfig error %v is not a coded CNI error", err)
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("ParseConfig accepted a config that fails Validate: %v", verr)
		}
	})
}
