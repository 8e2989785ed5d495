package cni

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// confJSON returns a network configuration of version 1.0.0 with the given fields added.
func confJSON(fields string) string {
	return `{"cniVersion":"1.0.0","name":"ferry","type":"ferry",` + fields + `}`
}

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		stdin    string
		wantCode uint // 0: valid
		wantMsg  string
	}{
		{
			name: "ferryd's configuration",
			stdin: confJSON(`"bpffsDir":"/sys/fs/bpf/ferry","mtu":1500,` +
				`"ipam":{"type":"host-local"}`),
		},
		{
			name:  "defaults",
			stdin: confJSON(`"ipam":{"type":"host-local"}`),
		},
		{
			name:     "not JSON",
			stdin:    `{"cniVersion":`,
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "decode network configuration",
		},
		{
			name:     "mtu of the wrong type",
			stdin:    confJSON(`"mtu":"1500","ipam":{"type":"host-local"}`),
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "decode network configuration",
		},
		{
			name:     "no IPAM type",
			stdin:    confJSON(`"mtu":1500`),
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  "missing ipam.type: set it to an IPAM plugin such as host-local",
		},
		{
			name:     "relative bpffsDir",
			stdin:    confJSON(`"bpffsDir":"ferry","ipam":{"type":"host-local"}`),
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  `invalid bpffsDir "ferry": use a clean absolute path`,
		},
		{
			name:     "unclean bpffsDir",
			stdin:    confJSON(`"bpffsDir":"/sys/fs/bpf/../ferry","ipam":{"type":"host-local"}`),
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  `invalid bpffsDir "/sys/fs/bpf/../ferry"`,
		},
		{
			name:     "mtu too small",
			stdin:    confJSON(`"mtu":60,"ipam":{"type":"host-local"}`),
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  "invalid mtu 60: use 68 to 65535",
		},
		{
			name:     "mtu too large",
			stdin:    confJSON(`"mtu":70000,"ipam":{"type":"host-local"}`),
			wantCode: types.ErrInvalidNetworkConfig,
			wantMsg:  "invalid mtu 70000",
		},
		{
			name: "broken prevResult",
			stdin: confJSON(`"ipam":{"type":"host-local"},` +
				`"prevResult":{"ips":[{"address":"nonsense"}]}`),
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "decode prevResult",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ParseNetConf([]byte(tt.stdin))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("ParseNetConf: %v", err)
				}
				if conf.BPFFSDir != DefaultBPFFSDir {
					t.Errorf("bpffsDir %q, want %q", conf.BPFFSDir, DefaultBPFFSDir)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseNetConf accepted %s", tt.stdin)
			}
			cniErr := toCNIError(err).(*types.Error)
			if cniErr.Code != tt.wantCode {
				t.Errorf("code %d, want %d: %v", cniErr.Code, tt.wantCode, err)
			}
			if !strings.Contains(cniErr.Msg, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", cniErr.Msg, tt.wantMsg)
			}
		})
	}
}

func TestParseNetConfPrevResult(t *testing.T) {
	stdin := `{"cniVersion":"0.4.0","name":"ferry","ipam":{"type":"host-local"},` +
		`"prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],` +
		`"ips":[{"version":"4","address":"10.200.0.2/24","interface":0}]}}`
	conf, err := ParseNetConf([]byte(stdin))
	if err != nil {
		t.Fatalf("ParseNetConf: %v", err)
	}
	ips := resultIPv4s(conf.prevResult)
	if len(ips) != 1 || ips[0].String() != "10.200.0.2" {
		t.Errorf("prevResult addresses %v, want [10.200.0.2]", ips)
	}
}

func TestHostVethName(t *testing.T) {
	name := HostVethName("0123456789abcdef", "eth0")
	if name != HostVethName("0123456789abcdef", "eth0") {
		t.Errorf("HostVethName is not stable")
	}
	if len(name) != 13 || len(name) > 15 {
		t.Errorf("name %q has %d characters, want 13", name, len(name))
	}
	if !isHostVethName(name) {
		t.Errorf("name %q does not match the host veth pattern", name)
	}
	// `printf 0123456789abcdef/eth0 | sha256sum` starts with 60373cf9024.
	if want := "fy60373cf9024"; name != want {
		t.Errorf("name %q, want %q", name, want)
	}
	if HostVethName("0123456789abcdef", "eth1") == name {
		t.Errorf("two interfaces of one container share the name %q", name)
	}
	if HostVethName("0123456789abcdee", "eth0") == name {
		t.Errorf("two containers share the name %q", name)
	}
	if isHostVethName("eth0") || isHostVethName("fy0123456789ab") {
		t.Errorf("isHostVethName accepts names that HostVethName never returns")
	}
}

func TestToCNIError(t *testing.T) {
	delegated := types.NewError(types.ErrTryAgainLater, "busy", "")
	tests := []struct {
		name string
		err  error
		want uint
	}{
		{"plain", errors.New("boom"), types.ErrInternal},
		{"coded", withCode(ErrCodeDatapath, errors.New("boom")), ErrCodeDatapath},
		{"wrapped coded", fmt.Errorf("step: %w", withCode(ErrCodeCheckFailed,
			errors.New("boom"))), ErrCodeCheckFailed},
		{"delegated", fmt.Errorf("ipam: %w", delegated), types.ErrTryAgainLater},
		{"coded over delegated", withCode(ErrCodeIPAMResult, fmt.Errorf("ipam: %w",
			delegated)), ErrCodeIPAMResult},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := toCNIError(tt.err).(*types.Error)
			if got.Code != tt.want {
				t.Errorf("code %d, want %d", got.Code, tt.want)
			}
			if got.Msg != tt.err.Error() {
				t.Errorf("message %q, want %q", got.Msg, tt.err.Error())
			}
		})
	}
	if toCNIError(nil) != nil {
		t.Errorf("toCNIError(nil) is not nil")
	}
}
