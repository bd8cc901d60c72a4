package cni

// The built weft-cni binary driven exactly as a runtime drives it: CNI_*
// environment variables, config on stdin, a CNI error JSON on stdout and a
// non-zero exit on failure.

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/cni/spool"
)

type run struct {
	stdout, stderr string
	exit           int
}

func runBinary(t *testing.T, env map[string]string, stdin string) run {
	t.Helper()
	cmd := exec.Command(binary(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run weft-cni: %v", err)
	}
	return r
}

func cniEnv(cmd string, extra ...string) map[string]string {
	env := map[string]string{
		"CNI_COMMAND": cmd, "CNI_CONTAINERID": "b0281865c53221ef2dddd2bdac061645dba6d9c79f176200f83a8e3af28d30aa",
		"CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_NETNS": "/var/run/netns/does-not-exist-weft",
		"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "<unset>" {
			delete(env, extra[i])
			continue
		}
		env[extra[i]] = extra[i+1]
	}
	return env
}

func TestBinaryErrors(t *testing.T) {
	noPeer := filepath.Join(t.TempDir(), "none.sock")
	good := `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","socket":"` + noPeer + `","dataDir":"` + t.TempDir() + `"}`
	tests := []struct {
		name     string
		env      map[string]string
		stdin    string
		wantCode uint
		wantMsg  string // substring of msg
	}{
		{name: "malformed JSON", env: cniEnv("ADD"), stdin: `{"cniVersion":`, wantCode: 6, wantMsg: "unmarshal"},
		{name: "unknown cniVersion", env: cniEnv("ADD"), stdin: `{"cniVersion":"9.9.9","name":"weft","type":"weft-cni"}`, wantCode: 1, wantMsg: "incompatible"},
		{name: "missing CNI_NETNS on ADD", env: cniEnv("ADD", "CNI_NETNS", "<unset>"), stdin: good, wantCode: 4, wantMsg: "CNI_NETNS"},
		{name: "unknown CNI_COMMAND", env: cniEnv("FROB"), stdin: good, wantCode: 4, wantMsg: "unknown CNI_COMMAND"},
		{name: "invalid config", env: cniEnv("DEL"), stdin: `{"cniVersion":"1.0.0","name":"weft","mtu":10}`, wantCode: 7, wantMsg: "mtu"},
		{name: "bogus netns", env: cniEnv("ADD"), stdin: good, wantCode: 8, wantMsg: "netns"},
		{name: "own netns", env: cniEnv("ADD", "CNI_NETNS", "/proc/self/ns/net"), stdin: good, wantCode: 8, wantMsg: "own network namespace"},
		{name: "peer down on STATUS", env: cniEnv("STATUS"), stdin: strings.Replace(good, "1.0.0", "1.1.0", 1), wantCode: 50, wantMsg: "weft peer not running at " + noPeer},
		{name: "STATUS needs 1.1.0", env: cniEnv("STATUS"), stdin: good, wantCode: 1},
		{name: "bad CNI_ARGS", env: cniEnv("ADD", "CNI_ARGS", "FOO=bar"), stdin: good, wantCode: 4, wantMsg: "IgnoreUnknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runBinary(t, tt.env, tt.stdin)
			if r.exit == 0 {
				t.Fatalf("exit 0, stdout %q; want failure", r.stdout)
			}
			var e struct {
				Version string `json:"cniVersion"`
				Code    uint   `json:"code"`
				Msg     string `json:"msg"`
				Details string `json:"details"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
				t.Fatalf("stdout %q is not CNI error JSON: %v (stderr %q)", r.stdout, err, r.stderr)
			}
			if e.Code != tt.wantCode || !strings.Contains(e.Msg+" "+e.Details, tt.wantMsg) {
				t.Fatalf("error = %+v; want code %d with %q", e, tt.wantCode, tt.wantMsg)
			}
			if strings.Contains(r.stderr, "panic") {
				t.Fatalf("stderr has a panic: %s", r.stderr)
			}
		})
	}
}

func TestBinaryVersionAndAbout(t *testing.T) {
	r := runBinary(t, map[string]string{"CNI_COMMAND": "VERSION"}, "")
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		t.Fatalf("VERSION = exit %d, %q", r.exit, r.stdout)
	}
	if strings.Join(v.Supported, ",") != "0.4.0,1.0.0,1.1.0" {
		t.Errorf("supportedVersions = %v; want 0.4.0,1.0.0,1.1.0", v.Supported)
	}
	r = runBinary(t, nil, "")
	if r.exit != 0 || !strings.Contains(r.stderr, "weft-cni") {
		t.Errorf("no CNI_COMMAND = exit %d, stderr %q; want 0 and the about text", r.exit, r.stderr)
	}
}

// DEL succeeds when the peer is down and spools the release; an empty
// CNI_NETNS and a second DEL are fine too.
func TestBinaryDelPeerDown(t *testing.T) {
	data := t.TempDir()
	conf := `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","socket":"` + filepath.Join(data, "none.sock") + `","dataDir":"` + data + `"}`
	for _, netns := range []string{"/var/run/netns/gone-weft", ""} {
		r := runBinary(t, cniEnv("DEL", "CNI_NETNS", netns, "CNI_IFNAME", "net1"), conf)
		if r.exit != 0 || r.stdout != "" {
			t.Fatalf("DEL (netns %q) = exit %d, stdout %q, stderr %q; want success", netns, r.exit, r.stdout, r.stderr)
		}
	}
	ids, err := spool.List(spool.Dir(data))
	if err != nil {
		t.Fatal(err)
	}
	want := cniEnv("DEL")["CNI_CONTAINERID"] + ":net1"
	if len(ids) != 1 || ids[0] != want {
		t.Fatalf("spool = %v; want [%s]", ids, want)
	}
}
