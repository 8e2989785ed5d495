package cni_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// TestCNIVersions runs ADD, CHECK, DEL and VERSION with each supported version. Debian's
// host-local supports versions up to 1.0.0, so 1.1.0 also covers the IPAM version fallback.
func TestCNIVersions(t *testing.T) {
	tests := []struct {
		version   string
		wantCheck bool // CHECK exists from 0.4.0 on
	}{
		{"0.3.1", false},
		{"0.4.0", true},
		{"1.0.0", true},
		{"1.1.0", true},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			n := newTestNode(t)
			list := confList(t, tt.version, n.netConf(podCIDR.String(), nil))
			pod := newTestPod(t)

			raw := n.mustAdd(t, list, pod)
			if raw.Version() != tt.version {
				t.Errorf("result version %s, want %s", raw.Version(), tt.version)
			}
			result, err := current.NewResultFromResult(raw)
			if err != nil {
				t.Fatalf("convert result: %v", err)
			}
			if len(result.IPs) != 1 || !strings.HasPrefix(result.IPs[0].Address.String(),
				firstPod.String()+"/") {
				t.Errorf("result IPs %v, want %s", result.IPs, firstPod)
			}
			if _, found, err := n.maps(t).LookupEndpoint(firstPod); err != nil || !found {
				t.Errorf("endpoint %s: found %v, error %v", firstPod, found, err)
			}

			err = n.check(list, pod)
			switch {
			case tt.wantCheck && err != nil:
				t.Errorf("CHECK: %v", err)
			case !tt.wantCheck && err == nil:
				t.Errorf("CHECK passed for version %s, which has no CHECK", tt.version)
			}

			if err := n.del(list, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.assertNothingLeft(t, pod, firstPod)

			info, err := invoke.GetVersionInfo(context.Background(),
				filepath.Join(pluginDir, "ferry"), nil)
			if err != nil {
				t.Fatalf("VERSION: %v", err)
			}
			if !slices.Contains(info.SupportedVersions(), tt.version) {
				t.Errorf("VERSION lists %v, without %s", info.SupportedVersions(), tt.version)
			}
		})
	}
}
