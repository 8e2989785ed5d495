// Package containerd runs Debian's containerd with runc inside a node of the namespace lab
// and drives it through the CRI API, as kubelet does. Pods that containerd starts get their
// network from the CNI configuration that ferryd writes into the node's net.d.
//
// containerd shares the machine's mount namespace and cgroup hierarchy, so each runtime keeps
// everything it creates in places of its own: the root, state and runc directories and the
// sockets under RootDir/<node namespace>, pod network namespaces under the state directory
// (netns_mounts_under_state_dir), and pod cgroups under a parent named after the node
// namespace. Close and CleanStale remove all of it.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ferrynet/ferry/test/lab"
)

// RootDir contains one directory per runtime, named after the node's namespace.
const RootDir = "/run/ferry-lab-containerd"

// criNamespace is the containerd namespace of the CRI plugin.
const criNamespace = "k8s.io"

const (
	// readyTimeout bounds the wait for containerd to serve the CRI API after a start.
	readyTimeout = 60 * time.Second
	// callTimeout bounds each CRI call of the cleanup.
	callTimeout = 30 * time.Second
)

// RequiredTools lists the commands that a runtime needs. Start fails without them; tests
// call SkipUnlessAvailable first.
var RequiredTools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"}

// Options configures Start.
type Options struct {
	// CNIBinDir is the directory in which containerd looks for CNI plugins. It must contain
	// loopback, which containerd runs for every pod, and the plugins of the configuration.
	CNIBinDir string
	// CNIConfDir is the directory from which containerd loads the CNI configuration.
	CNIConfDir string
	// SandboxImage is the image of the pods' sandbox (pause) containers. It must be imported
	// before the first pod starts, because no registry is reachable.
	SandboxImage string
}

// Runtime is a containerd that runs in a lab node's network namespace.
type Runtime struct {
	// Node is the lab node whose namespace containerd runs in.
	Node *lab.Node
	// Dir is RootDir/<node namespace>: the configuration, root and state directories and
	// the socket.
	Dir string
	// Socket is the path of containerd's gRPC socket.
	Socket string
	// CgroupParent is the cgroup under which pods must put their cgroups, the value of
	// LinuxPodSandboxConfig.CgroupParent, so that Close finds their processes.
	CgroupParent string
	// Runtime and Images are the CRI clients of the running containerd.
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient

	opts Options
	proc *lab.Process
	conn *grpc.ClientConn
}

// configTemplate is containerd's configuration (version 2 of its format). Plugins that the
// lab does not use are disabled, which shortens the start.
var configTemplate = template.Must(template.New("config").Parse(`version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{{.Socket}}"

[ttrpc]
  address = "{{.Socket}}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{{.Dir}}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{{.SandboxImage}}"
    restrict_oom_score_adj = true
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{{.Dir}}/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{{.CNIBinDir}}"
      conf_dir = "{{.CNIConfDir}}"
      max_conf_num = 1
`))

// SkipUnlessAvailable skips the test when the lab cannot run or a command of RequiredTools
// is missing.
func SkipUnlessAvailable(t interface {
	Helper()
	Skipf(string, ...any)
	Skip(...any)
}) {
	t.Helper()
	for _, tool := range RequiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("containerd tests need the command %q, which is not in PATH; install "+
				"Debian's containerd and runc packages", tool)
		}
	}
}

// Start writes the configuration of a containerd for node, starts it in the node's network
// namespace and waits until it serves the CRI API. containerd stops when ctx is done, when
// the lab closes or on Close. Only Close removes what it created.
func Start(ctx context.Context, node *lab.Node, opts Options) (*Runtime, error) {
	r := &Runtime{
		Node:         node,
		Dir:          filepath.Join(RootDir, node.NSName),
		CgroupParent: "/ferry-" + node.NSName,
		opts:         opts,
	}
	r.Socket = filepath.Join(r.Dir, "containerd.sock")
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create containerd directory %s: %w", r.Dir, err)
	}

	var config strings.Builder
	err := configTemplate.Execute(&config, map[string]string{
		"Dir":          r.Dir,
		"Socket":       r.Socket,
		"SandboxImage": opts.SandboxImage,
		"CNIBinDir":    opts.CNIBinDir,
		"CNIConfDir":   opts.CNIConfDir,
	})
	if err != nil {
		return nil, fmt.Errorf("render containerd configuration: %w", err)
	}
	if err := os.WriteFile(r.configPath(), []byte(config.String()), 0o600); err != nil {
		return nil, fmt.Errorf("write containerd configuration: %w", err)
	}
	if err := r.start(ctx); err != nil {
		return nil, errors.Join(err, r.Close())
	}
	return r, nil
}

func (r *Runtime) configPath() string { return filepath.Join(r.Dir, "config.toml") }

// start starts containerd and connects the CRI clients once it serves them.
func (r *Runtime) start(ctx context.Context) error {
	proc, err := r.Node.Start(ctx, "containerd", "--config", r.configPath())
	if err != nil {
		return fmt.Errorf("start containerd on %s: %w", r.Node.Name, err)
	}
	r.proc = proc

	conn, err := grpc.NewClient("unix://"+r.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("create CRI client for %s: %w", r.Socket, err)
	}
	r.conn = conn
	r.Runtime = runtimeapi.NewRuntimeServiceClient(conn)
	r.Images = runtimeapi.NewImageServiceClient(conn)

	deadline := time.Now().Add(readyTimeout)
	for {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.Runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return nil
		}
		// containerd opens its socket after it has loaded every plugin, so a missing CRI
		// service means the CRI plugin failed to load.
		if status.Code(err) == codes.Unimplemented {
			return fmt.Errorf("containerd on %s serves no CRI API: %w: %s", r.Node.Name, err,
				tail(proc.Output()))
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("containerd on %s exited during its start: %s", r.Node.Name,
				tail(proc.Output()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd on %s did not serve the CRI API within %s: %w: %s",
				r.Node.Name, readyTimeout, err, tail(proc.Output()))
		}
	}
}

// Stop stops containerd with SIGTERM. The shims and the pods keep running.
func (r *Runtime) Stop() error {
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
	if r.proc == nil {
		return nil
	}
	err := r.proc.Stop()
	r.proc = nil
	if err != nil {
		return fmt.Errorf("stop containerd on %s: %w", r.Node.Name, err)
	}
	return nil
}

// Restart stops containerd and starts it again with the same configuration, as an upgrade
// or a crash of the runtime does. Running pods stay.
func (r *Runtime) Restart(ctx context.Context) error {
	if err := r.Stop(); err != nil {
		return err
	}
	return r.start(ctx)
}

// Output returns what containerd has logged since its last start.
func (r *Runtime) Output() string {
	if r.proc == nil {
		return ""
	}
	return r.proc.Output()
}

// Import imports an image archive into the CRI plugin's namespace and unpacks it for the
// overlayfs snapshotter.
func (r *Runtime) Import(ctx context.Context, archive string) error {
	_, err := r.Node.Run(ctx, "ctr", "--address", r.Socket, "--namespace", criNamespace,
		"images", "import", archive)
	if err != nil {
		return fmt.Errorf("import image %s into containerd on %s: %w", archive, r.Node.Name, err)
	}
	return nil
}

// Close removes the pods that containerd still runs through the CRI API, stops containerd,
// kills what is left of the shims and the pods' processes, unmounts what containerd mounted
// and deletes the runtime's directories and cgroups. It goes on after errors and returns
// them all.
func (r *Runtime) Close() error {
	var errs []error
	if r.conn != nil {
		if err := r.removeSandboxes(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.Stop(); err != nil {
		errs = append(errs, err)
	}
	if err := cleanDir(r.Dir, r.CgroupParent); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up containerd of %s: %w", r.Node.Name, err)
	}
	return nil
}

// removeSandboxes stops and removes every pod sandbox, which also removes its containers
// and has the CNI plugins delete its network.
func (r *Runtime) removeSandboxes() error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := r.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var errs []error
	for _, sb := range list.Items {
		if _, err := r.Runtime.StopPodSandbox(ctx,
			&runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod sandbox %s: %w", sb.Id, err))
		}
		if _, err := r.Runtime.RemovePodSandbox(ctx,
			&runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod sandbox %s: %w", sb.Id, err))
		}
	}
	return errors.Join(errs...)
}

// tail returns the last lines of a log for an error message.
func tail(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
