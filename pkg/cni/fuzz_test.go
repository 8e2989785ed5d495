package cni

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// The seed corpora of these targets are in testdata/fuzz/<target>; `go test` runs them as
// regression cases, and `go test -fuzz=<target>` searches for new inputs.

// FuzzParseNetConf checks that any network configuration is either rejected with a CNI error
// code for configurations or accepted with every rule of validate holding.
func FuzzParseNetConf(f *testing.F) {
	f.Add([]byte(confJSON(`"ipam":{"type":"host-local"}`)))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := ParseNetConf(stdin)
		if err != nil {
			var coded *codedError
			if !errors.As(err, &coded) {
				t.Fatalf("error without a CNI code: %v", err)
			}
			if coded.code != types.ErrDecodingFailure &&
				coded.code != types.ErrInvalidNetworkConfig {
				t.Fatalf("error code %d, want %d or %d: %v", coded.code,
					types.ErrDecodingFailure, types.ErrInvalidNetworkConfig, err)
			}
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if conf.IPAM.Type == "" {
			t.Error("accepted a configuration without ipam.type")
		}
		if !filepath.IsAbs(conf.BPFFSDir) || filepath.Clean(conf.BPFFSDir) != conf.BPFFSDir {
			t.Errorf("accepted bpffsDir %q, not a clean absolute path", conf.BPFFSDir)
		}
		if conf.MTU != 0 && (conf.MTU < minMTU || conf.MTU > maxMTU) {
			t.Errorf("accepted mtu %d", conf.MTU)
		}
		if conf.RawPrevResult != nil && conf.prevResult == nil {
			t.Error("accepted a prevResult without converting it")
		}
	})
}

// FuzzParseArgs checks that CNI_ARGS are either rejected with code 4 or parsed into the
// values of their Kubernetes keys.
func FuzzParseArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
	f.Fuzz(func(t *testing.T, s string) {
		args, err := ParseArgs(s)
		if err != nil {
			var coded *codedError
			if !errors.As(err, &coded) || coded.code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("error %v, want CNI code %d", err, types.ErrInvalidEnvironmentVariables)
			}
			return
		}
		if s == "" {
			if args != (PodArgs{}) {
				t.Errorf("empty CNI_ARGS parsed to %+v", args)
			}
			return
		}
		// The last value of each key wins.
		want := map[string]string{}
		for _, pair := range strings.Split(s, ";") {
			key, value, ok := strings.Cut(pair, "=")
			if !ok || key == "" {
				t.Fatalf("accepted invalid pair %q", pair)
			}
			want[key] = value
		}
		got := map[string]string{
			"K8S_POD_NAMESPACE":          args.Namespace,
			"K8S_POD_NAME":               args.Name,
			"K8S_POD_INFRA_CONTAINER_ID": args.InfraContainerID,
			"K8S_POD_UID":                args.UID,
		}
		for key, value := range got {
			if value != want[key] {
				t.Errorf("%s = %q, want %q", key, value, want[key])
			}
		}
	})
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    PodArgs
		wantErr string
	}{
		{name: "empty"},
		{
			name: "containerd",
			in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns-0;" +
				"K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234",
			want: PodArgs{Namespace: "kube-system", Name: "dns-0", InfraContainerID: "abc",
				UID: "1234"},
		},
		{name: "value with =", in: "K8S_POD_NAME=a=b", want: PodArgs{Name: "a=b"}},
		{name: "empty value", in: "K8S_POD_NAME=", want: PodArgs{}},
		{name: "pair without =", in: "K8S_POD_NAME", wantErr: `invalid CNI_ARGS pair ` +
			`"K8S_POD_NAME": use KEY=VALUE pairs separated by ';'`},
		{name: "empty key", in: "=x", wantErr: `invalid CNI_ARGS pair "=x"`},
		{name: "trailing separator", in: "K8S_POD_NAME=a;", wantErr: `invalid CNI_ARGS pair ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if code := toCNIError(err).(*types.Error).Code; code != 4 {
					t.Errorf("error code %d, want 4", code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseArgs(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestAttachmentAlias(t *testing.T) {
	a := attachment{containerID: "0123abcd", ifName: "eth0"}
	alias, ok := attachmentAlias("ferry", a)
	if !ok || alias != "ferry:ferry:0123abcd:eth0" {
		t.Fatalf("alias %q, ok %v", alias, ok)
	}
	if got, ok := parseAttachmentAlias(alias, "ferry"); !ok || got != a {
		t.Errorf("parse %q = %+v, %v; want %+v", alias, got, ok, a)
	}
	if _, ok := parseAttachmentAlias(alias, "other"); ok {
		t.Errorf("alias %q parsed for network other", alias)
	}
	for _, bad := range []string{"", "ferry:", "ferry:ferry:id", "ferry:ferry::eth0",
		"ferry:ferry:id:eth0:x", "other:ferry:id:eth0"} {
		if got, ok := parseAttachmentAlias(bad, "ferry"); ok {
			t.Errorf("invalid alias %q parsed to %+v", bad, got)
		}
	}
	if _, ok := attachmentAlias("ferry", attachment{containerID: strings.Repeat("a", 300),
		ifName: "eth0"}); ok {
		t.Error("an alias longer than 255 bytes was accepted")
	}
	if _, ok := attachmentAlias("ferry", attachment{containerID: "a:b", ifName: "eth0"}); ok {
		t.Error("a container ID with ':' was accepted")
	}
}
