package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ferrynet/ferry/pkg/config"
)

func TestSystemdExampleConfig(t *testing.T) {
	data, err := os.ReadFile("systemd/ferryd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("ferryd rejects systemd/ferryd.yaml: %v", err)
	}
	if cfg.CNI.BinDir != "/usr/lib/cni" {
		t.Errorf("cni.binDir %s, want Debian's /usr/lib/cni", cfg.CNI.BinDir)
	}
}

func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("systemd/ferryd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("line %q is no key=value setting", line)
				continue
			}
			settings[section+"."+key] = append(settings[section+"."+key], value)
		}
	}
	want := map[string]string{
		"Service.ExecStart":                "/usr/local/bin/ferryd --config /etc/ferry/ferryd.yaml",
		"Service.KillMode":                 "process",
		"Service.Restart":                  "always",
		"Service.RestartPreventExitStatus": "2",
		"Install.WantedBy":                 "multi-user.target",
	}
	for key, value := range want {
		if !slices.Contains(settings[key], value) {
			t.Errorf("%s = %v, want %q", key, settings[key], value)
		}
	}
	if pre := strings.Join(settings["Service.ExecStartPre"], " "); !strings.Contains(pre,
		"mount -t bpf bpf /sys/fs/bpf") {
		t.Errorf("ExecStartPre %q does not mount bpffs", pre)
	}
}

// manifest is the part of the Kubernetes objects that the test checks.
type manifest struct {
	Kind     string
	Metadata struct{ Name, Namespace string }
	Data     map[string]string
	Spec     struct {
		Template struct {
			Spec struct {
				HostNetwork bool `yaml:"hostNetwork"`
				Tolerations []struct{ Operator string }
				Containers  []struct {
					Command         []string
					Args            []string
					Env             []env
					SecurityContext struct{ Privileged bool } `yaml:"securityContext"`
					VolumeMounts    []struct {
						Name             string
						MountPath        string `yaml:"mountPath"`
						MountPropagation string `yaml:"mountPropagation"`
					} `yaml:"volumeMounts"`
				}
				Volumes []struct {
					Name      string
					ConfigMap *struct{ Name string } `yaml:"configMap"`
					HostPath  *struct{ Path string } `yaml:"hostPath"`
				}
			}
		}
	}
}

type env struct {
	Name      string
	ValueFrom struct {
		FieldRef struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

func readManifests(t *testing.T) map[string]manifest {
	t.Helper()
	data, err := os.ReadFile("kubernetes/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]manifest{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode kubernetes/ferry.yaml: %v", err)
		}
		objects[m.Kind] = m
	}
	return objects
}

func TestDaemonSetConfigMap(t *testing.T) {
	cm, ok := readManifests(t)["ConfigMap"]
	if !ok {
		t.Fatal("kubernetes/ferry.yaml has no ConfigMap")
	}
	if len(cm.Data) == 0 {
		t.Fatal("the ConfigMap has no node configuration")
	}
	for key, data := range cm.Data {
		cfg, err := config.Parse([]byte(data))
		if err != nil {
			t.Errorf("ferryd rejects %s: %v", key, err)
			continue
		}
		if key != cfg.NodeName+".yaml" {
			t.Errorf("file %s configures node %s, want %s.yaml", key, cfg.NodeName,
				cfg.NodeName)
		}
		if cfg.CNI.BinDir != "/opt/cni/bin" || cfg.CNI.ConfDir != "/etc/cni/net.d" {
			t.Errorf("%s: cni.binDir %s and confDir %s, want the mounted /opt/cni/bin and "+
				"/etc/cni/net.d", key, cfg.CNI.BinDir, cfg.CNI.ConfDir)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	ds, ok := readManifests(t)["DaemonSet"]
	if !ok {
		t.Fatal("kubernetes/ferry.yaml has no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the DaemonSet does not use the host network")
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol struct{ Operator string }) bool {
		return tol.Operator == "Exists"
	}) {
		t.Error("the DaemonSet does not tolerate every taint")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want ferryd alone", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !c.SecurityContext.Privileged {
		t.Error("ferryd is not privileged, which a Bidirectional mount requires")
	}
	if got := strings.Join(append(c.Command, c.Args...), " "); got !=
		"/usr/local/bin/ferryd --config /etc/ferry/$(NODE_NAME).yaml" {
		t.Errorf("command %q", got)
	}
	if !slices.ContainsFunc(c.Env, func(e env) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Error("NODE_NAME does not come from spec.nodeName")
	}

	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	wantMounts := map[string]string{
		"/sys/fs/bpf":    "Bidirectional",
		"/etc/cni/net.d": "",
		"/opt/cni/bin":   "",
		"/var/lib/cni":   "",
		"/run/netns":     "HostToContainer",
	}
	for _, m := range c.VolumeMounts {
		propagation, ok := wantMounts[m.MountPath]
		if !ok {
			continue
		}
		delete(wantMounts, m.MountPath)
		if hostPaths[m.Name] != m.MountPath {
			t.Errorf("%s mounts host path %q, want the same path", m.MountPath,
				hostPaths[m.Name])
		}
		if m.MountPropagation != propagation {
			t.Errorf("%s has propagation %q, want %q", m.MountPath, m.MountPropagation,
				propagation)
		}
	}
	for path := range wantMounts {
		t.Errorf("the DaemonSet does not mount the host's %s", path)
	}
}
