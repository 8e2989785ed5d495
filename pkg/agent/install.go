package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PluginName is the file name of the CNI plugin, the "type" of its configuration entry.
const PluginName = "ferry"

// pluginMode is the mode of the installed plugin: container runtimes execute it as root.
const pluginMode fs.FileMode = 0o755

// installPlugin installs the ferry plugin that sits next to the running ferryd into the
// configured CNI bin dir. A ferryd without a plugin next to it logs a warning and installs
// nothing, so that a plugin installed by other means stays in use.
func (a *Agent) installPlugin(binDir string) error {
	src, err := pluginNextToExecutable()
	if err != nil {
		return err
	}
	installed, err := InstallPlugin(src, binDir)
	switch {
	case errors.Is(err, errNoPluginSource):
		a.log.Warn("CNI plugin not installed: no ferry binary next to ferryd", "source", src,
			"bin_dir", binDir)
		return nil
	case err != nil:
		return err
	case installed:
		a.log.Info("installed CNI plugin", "source", src,
			"path", filepath.Join(binDir, PluginName))
	}
	return nil
}

// pluginNextToExecutable returns the path of the ferry binary in the directory of the
// running executable, with symbolic links of the executable resolved.
func pluginNextToExecutable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find ferryd executable: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Join(filepath.Dir(exe), PluginName), nil
}

// errNoPluginSource means the plugin binary to install does not exist.
var errNoPluginSource = errors.New("plugin binary to install not found")

// InstallPlugin copies the plugin binary src to binDir/ferry and reports whether it wrote
// the file. It writes a temporary file in binDir and renames it, so that a runtime starting
// the plugin at the same moment runs the old binary or the new one, never a part. It skips
// the copy when the destination is src itself or has the same content and mode. It returns
// an error wrapping errNoPluginSource when src does not exist.
func InstallPlugin(src, binDir string) (bool, error) {
	srcInfo, err := os.Stat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("%w: %s", errNoPluginSource, src)
	}
	if err != nil {
		return false, fmt.Errorf("read plugin binary: %w", err)
	}
	if !srcInfo.Mode().IsRegular() {
		return false, fmt.Errorf("invalid plugin binary %s: it is a %s, not a regular file; "+
			"build cmd/ferry and place it next to ferryd", src, srcInfo.Mode().Type())
	}

	dst := filepath.Join(binDir, PluginName)
	dstInfo, dstErr := os.Stat(dst)
	if dstErr == nil && os.SameFile(srcInfo, dstInfo) {
		return false, nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read plugin binary: %w", err)
	}
	if dstErr == nil && dstInfo.Mode().IsRegular() && dstInfo.Mode().Perm() == pluginMode {
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
			return false, nil
		}
	}

	if err := writeFileAtomic(dst, data, pluginMode); err != nil {
		return false, fmt.Errorf("install CNI plugin into %s: %w", binDir, err)
	}
	return true, nil
}
