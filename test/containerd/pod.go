package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podNamespace is the Kubernetes namespace of the test pods.
const podNamespace = "default"

// Pod is a pod sandbox that the runtime runs through the CRI API, with at most one container.
type Pod struct {
	// Name is the pod's name in podNamespace.
	Name string
	// SandboxID is the id of the sandbox, which containerd passes to CNI as CNI_CONTAINERID.
	SandboxID string
	// ContainerID is the id of the pod's container, empty until StartContainer.
	ContainerID string
	// IP is the pod's address as PodSandboxStatus reports it.
	IP netip.Addr
	// NetNSPath is the pod's network namespace, as CNI_NETNS.
	NetNSPath string

	config  *runtimeapi.PodSandboxConfig
	runtime *Runtime
}

// RunPod runs a pod sandbox named name, as kubelet does for a pod without host networking,
// and reads its address and network namespace from PodSandboxStatus.
func (r *Runtime) RunPod(ctx context.Context, name string) (*Pod, error) {
	uid, err := randomUID()
	if err != nil {
		return nil, err
	}
	config := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: podNamespace,
			Uid: uid},
		Hostname:     name,
		LogDirectory: filepath.Join(r.Dir, "logs", name),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: r.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	resp, err := r.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: config})
	if err != nil {
		return nil, fmt.Errorf("run pod sandbox %s on %s: %w", name, r.Node.Name, err)
	}
	pod := &Pod{Name: name, SandboxID: resp.PodSandboxId, config: config, runtime: r}
	if err := pod.readStatus(ctx); err != nil {
		return pod, err
	}
	return pod, nil
}

// readStatus fills in IP and NetNSPath from PodSandboxStatus.
func (p *Pod) readStatus(ctx context.Context) error {
	status, err := p.Status(ctx)
	if err != nil {
		return err
	}
	if status.Network == nil || status.Network.Ip == "" {
		return fmt.Errorf("pod %s: PodSandboxStatus reports no IP", p.Name)
	}
	ip, err := netip.ParseAddr(status.Network.Ip)
	if err != nil {
		return fmt.Errorf("pod %s: parse IP %q of PodSandboxStatus: %w", p.Name,
			status.Network.Ip, err)
	}
	p.IP = ip
	if p.NetNSPath == "" {
		return fmt.Errorf("pod %s: the verbose PodSandboxStatus names no network namespace",
			p.Name)
	}
	return nil
}

// Status returns the sandbox's PodSandboxStatus.
func (p *Pod) Status(ctx context.Context) (*runtimeapi.PodSandboxStatus, error) {
	resp, err := p.runtime.Runtime.PodSandboxStatus(ctx,
		&runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.SandboxID, Verbose: true})
	if err != nil {
		return nil, fmt.Errorf("read status of pod %s: %w", p.Name, err)
	}
	if info, ok := resp.Info["info"]; ok && p.NetNSPath == "" {
		p.NetNSPath = netNSPathFromInfo(info)
	}
	return resp.Status, nil
}

// netNSPathFromInfo returns the network namespace path of the OCI runtime spec in the
// verbose sandbox information of containerd, or "" when there is none.
func netNSPathFromInfo(info string) string {
	var parsed struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(info), &parsed); err != nil {
		return ""
	}
	for _, ns := range parsed.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			return ns.Path
		}
	}
	return ""
}

// StartContainer creates and starts the pod's container from image with command.
func (p *Pod) StartContainer(ctx context.Context, image string, command ...string) error {
	r := p.runtime
	config := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  command,
		LogPath:  "main.log",
	}
	created, err := r.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId:  p.SandboxID,
		Config:        config,
		SandboxConfig: p.config,
	})
	if err != nil {
		return fmt.Errorf("create container in pod %s: %w", p.Name, err)
	}
	p.ContainerID = created.ContainerId
	_, err = r.Runtime.StartContainer(ctx,
		&runtimeapi.StartContainerRequest{ContainerId: created.ContainerId})
	if err != nil {
		return fmt.Errorf("start container in pod %s: %w", p.Name, err)
	}
	return nil
}

// ExecResult is the outcome of a command that ExecSync ran in a container.
type ExecResult struct {
	Stdout   string
	Stderr   string
	ExitCode int32
}

func (r ExecResult) String() string {
	return fmt.Sprintf("exit code %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
}

// Exec runs cmd in the pod's container with ExecSync and a timeout in seconds.
func (p *Pod) Exec(ctx context.Context, timeoutSeconds int64, cmd ...string) (ExecResult,
	error) {
	if p.ContainerID == "" {
		return ExecResult{}, fmt.Errorf("exec in pod %s: no container started", p.Name)
	}
	resp, err := p.runtime.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{
		ContainerId: p.ContainerID,
		Cmd:         cmd,
		Timeout:     timeoutSeconds,
	})
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec %q in pod %s: %w", cmd, p.Name, err)
	}
	return ExecResult{Stdout: string(resp.Stdout), Stderr: string(resp.Stderr),
		ExitCode: resp.ExitCode}, nil
}

// Remove stops and removes the sandbox, as kubelet does when a pod is deleted: containerd
// kills its containers, runs CNI DEL and deletes the network namespace.
func (p *Pod) Remove(ctx context.Context) error {
	r := p.runtime
	var errs []error
	if _, err := r.Runtime.StopPodSandbox(ctx,
		&runtimeapi.StopPodSandboxRequest{PodSandboxId: p.SandboxID}); err != nil {
		errs = append(errs, fmt.Errorf("stop pod sandbox %s: %w", p.Name, err))
	}
	if _, err := r.Runtime.RemovePodSandbox(ctx,
		&runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.SandboxID}); err != nil {
		errs = append(errs, fmt.Errorf("remove pod sandbox %s: %w", p.Name, err))
	}
	return errors.Join(errs...)
}

func randomUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random pod uid: %w", err)
	}
	return hex.EncodeToString(b), nil
}
