package cni

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeIPAM is an IPAM plugin that appends "COMMAND cniVersion" to $FAKE_LOG for every call.
// It reads cniVersion only as the first key of compact JSON on standard input. It supports
// the versions in $FAKE_VERSIONS (a JSON list without brackets), rejects others with CNI
// error 1 as skel does, and returns 10.200.0.2/24 for ADD.
const fakeIPAM = `#!/bin/sh
stdin=$(cat)
ver=$(printf '%s' "$stdin" | sed -n 's/^{"cniVersion":"\([^"]*\)".*/\1/p')
echo "$CNI_COMMAND $ver" >> "$FAKE_LOG"
if [ "$CNI_COMMAND" = VERSION ]; then
	printf '{"cniVersion":"1.0.0","supportedVersions":[%s]}' "$FAKE_VERSIONS"
	exit 0
fi
case ",$FAKE_VERSIONS," in
*"\"$ver\""*) ;;
*) printf '{"cniVersion":"%s","code":1,"msg":"incompatible CNI versions"}' "$ver"; exit 1 ;;
esac
if [ "$CNI_COMMAND" = ADD ]; then
	printf '{"cniVersion":"%s","ips":[{"address":"10.200.0.2/24","gateway":"10.200.0.1"}]}' "$ver"
fi
exit 0
`

// setUpFakeIPAM installs fakeIPAM as "fake-ipam" on CNI_PATH and returns the path of its log.
func setUpFakeIPAM(t *testing.T, versions string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake-ipam"), []byte(fakeIPAM), 0o755); err != nil {
		t.Fatalf("write fake IPAM plugin: %v", err)
	}
	logPath := filepath.Join(dir, "calls.log")
	t.Setenv("CNI_PATH", dir)
	t.Setenv("FAKE_LOG", logPath)
	t.Setenv("FAKE_VERSIONS", versions)
	t.Setenv("CNI_CONTAINERID", "c1")
	t.Setenv("CNI_IFNAME", "eth0")
	t.Setenv("CNI_NETNS", "/run/netns/none")
	return logPath
}

func readCalls(t *testing.T, logPath string) []string {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read fake IPAM log: %v", err)
	}
	return strings.Fields(strings.ReplaceAll(string(data), " ", "_"))
}

func fakeConf(t *testing.T, cniVersion, extra string) (*NetConf, []byte) {
	t.Helper()
	stdin := []byte(`{"cniVersion":"` + cniVersion + `","name":"ferry","type":"ferry",` +
		`"ipam":{"type":"fake-ipam"}` + extra + `}`)
	conf, err := ParseNetConf(stdin)
	if err != nil {
		t.Fatalf("parse %s: %v", stdin, err)
	}
	return conf, stdin
}

func TestIPAMVersionFallback(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"0.4.0","1.0.0"`)
	conf, stdin := fakeConf(t, "1.1.0", "")

	result, err := ipamAdd(context.Background(), conf, stdin)
	if err != nil {
		t.Fatalf("ipamAdd: %v", err)
	}
	if len(result.IPs) != 1 || result.IPs[0].Address.String() != "10.200.0.2/24" {
		t.Errorf("result IPs %v, want 10.200.0.2/24", result.IPs)
	}
	// A 1.1.0 ADD reaches a plugin of 1.0.0 as 1.0.0 on the first call.
	want := []string{"ADD_1.0.0"}
	if got := readCalls(t, logPath); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestIPAMVersionFallbackBelow100(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"0.3.1","0.4.0"`)
	conf, stdin := fakeConf(t, "1.1.0", "")

	if _, err := ipamAdd(context.Background(), conf, stdin); err != nil {
		t.Fatalf("ipamAdd: %v", err)
	}
	want := []string{"ADD_1.0.0", "ADD_1.1.0", "VERSION_1.1.0", "ADD_0.4.0"}
	if got := readCalls(t, logPath); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestIPAMOnly110(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"1.1.0"`)
	conf, stdin := fakeConf(t, "1.1.0", "")

	if _, err := ipamAdd(context.Background(), conf, stdin); err != nil {
		t.Fatalf("ipamAdd: %v", err)
	}
	want := []string{"ADD_1.0.0", "ADD_1.1.0"}
	if got := readCalls(t, logPath); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestIPAMVersionFallbackConvertsPrevResult(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"0.4.0"`)
	prev := `,"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],` +
		`"ips":[{"address":"10.200.0.2/24","interface":0}]}`
	conf, stdin := fakeConf(t, "1.0.0", prev)

	if err := ipamDel(context.Background(), conf, stdin); err != nil {
		t.Fatalf("ipamDel: %v", err)
	}
	want := []string{"DEL_1.0.0", "VERSION_1.1.0", "DEL_0.4.0"}
	if got := readCalls(t, logPath); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}

	converted, err := setCNIVersion(stdin, "1.0.0", "0.4.0")
	if err != nil {
		t.Fatalf("setCNIVersion: %v", err)
	}
	// A 0.4.0 result states the IP version of each address.
	if !strings.Contains(string(converted), `"version":"4"`) {
		t.Errorf("prevResult not converted to 0.4.0: %s", converted)
	}
}

func TestIPAMNoFallbackWhenSupported(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"1.0.0","1.1.0"`)
	conf, stdin := fakeConf(t, "1.1.0", "")

	if _, err := ipamAdd(context.Background(), conf, stdin); err != nil {
		t.Fatalf("ipamAdd: %v", err)
	}
	if got := readCalls(t, logPath); len(got) != 1 || got[0] != "ADD_1.0.0" {
		t.Errorf("calls %v, want [ADD_1.0.0]", got)
	}
}

func TestIPAMTooOld(t *testing.T) {
	logPath := setUpFakeIPAM(t, `"0.3.1"`)
	conf, stdin := fakeConf(t, "1.0.0", "")

	// CHECK exists from 0.4.0 on, so there is no version to fall back to.
	err := ipamCheck(context.Background(), conf, stdin)
	if !errors.Is(err, errIPAMTooOld) {
		t.Errorf("ipamCheck error %v, want errIPAMTooOld", err)
	}
	want := []string{"CHECK_1.0.0", "VERSION_1.1.0"}
	if got := readCalls(t, logPath); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestIPAMNewCommands(t *testing.T) {
	tests := []struct {
		versions  string
		wantCalls string
		wantOld   bool
	}{
		{`"0.4.0","1.0.0"`, "VERSION_1.1.0 VERSION_1.1.0", true},
		{`"1.0.0","1.1.0"`, "VERSION_1.1.0 STATUS_1.1.0 VERSION_1.1.0 GC_1.1.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.versions, func(t *testing.T) {
			logPath := setUpFakeIPAM(t, tt.versions)
			conf, stdin := fakeConf(t, "1.1.0", "")

			statusErr := ipamStatus(context.Background(), conf, stdin)
			gcErr := ipamGC(context.Background(), conf, stdin)
			for name, err := range map[string]error{"STATUS": statusErr, "GC": gcErr} {
				if tt.wantOld && !errors.Is(err, errIPAMTooOld) {
					t.Errorf("%s error %v, want errIPAMTooOld", name, err)
				}
				if !tt.wantOld && err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			if got := strings.Join(readCalls(t, logPath), " "); got != tt.wantCalls {
				t.Errorf("calls %q, want %q", got, tt.wantCalls)
			}
		})
	}
}
