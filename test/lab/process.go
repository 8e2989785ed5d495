package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
	stopGrace = 5 * time.Second
	// enterTimeout bounds the wait for nsenter to enter the namespace.
	enterTimeout = 5 * time.Second
)

// Process is a long-running command that the lab started in a namespace, such as an agent.
type Process struct {
	// Args is the command line, without the nsenter prefix.
	Args []string
	// PID is the process id. nsenter execs the command, so this is the command's pid.
	PID int
	// LogPath is the file that receives the command's stdout and stderr.
	LogPath string

	ns   *Namespace
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// Start starts a command inside the namespace with 'nsenter --net' and returns as soon as
// the command runs inside the namespace.
// The command runs in its own process group, its stdout and stderr go to a log file in the
// lab state directory, and it inherits the environment (use "env K=V cmd" to add to it).
// The lab stops the command when ctx is done or when the lab is closed, whichever is first.
func (n *Namespace) Start(ctx context.Context, args ...string) (*Process, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("start in %s: missing command", n.NSName)
	}
	l := n.lab
	l.mu.Lock()
	if err := l.errIfClosed(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	l.logSeq++
	seq := l.logSeq
	l.mu.Unlock()

	logDir := filepath.Join(l.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create log dir %s: %w", logDir, err)
	}
	logPath := filepath.Join(logDir,
		fmt.Sprintf("%02d-%s-%s.log", seq, n.NSName, filepath.Base(args[0])))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log file %s: %w", logPath, err)
	}

	cmd := exec.Command("nsenter", n.nsenterArgs(args)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %q in %s: %w", strings.Join(args, " "), n.NSName, err)
	}
	p := &Process{
		Args:    args,
		PID:     cmd.Process.Pid,
		LogPath: logPath,
		ns:      n,
		cmd:     cmd,
		log:     logFile,
		done:    make(chan struct{}),
	}
	go p.wait()
	if err := p.waitInNamespace(); err != nil {
		p.Stop()
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			p.Stop()
		case <-p.done:
		}
	}()

	l.mu.Lock()
	l.processes = append(l.processes, p)
	l.mu.Unlock()
	l.logf("lab %s: started %s", l.Name, p)
	return p, nil
}

// waitInNamespace returns once nsenter has entered the namespace, so that a teardown right
// after Start finds the process there, or once the process has exited.
func (p *Process) waitInNamespace() error {
	var want unix.Stat_t
	if err := unix.Stat(p.ns.NSPath, &want); err != nil {
		return fmt.Errorf("start %s: stat namespace: %w", p, err)
	}
	deadline := time.Now().Add(enterTimeout)
	for time.Now().Before(deadline) {
		var st unix.Stat_t
		err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", p.PID), &st)
		if err == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			return nil
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(time.Millisecond):
		}
	}
	return fmt.Errorf("start %s: the process did not enter the namespace within %v",
		p, enterTimeout)
}

func (p *Process) wait() {
	p.err = p.cmd.Wait()
	p.log.Close()
	close(p.done)
}

func (p *Process) String() string {
	return fmt.Sprintf("pid %d %q in %s", p.PID, strings.Join(p.Args, " "), p.ns.NSName)
}

// Done returns a channel that is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error after Done is closed: nil for exit status 0, an
// *exec.ExitError otherwise. A process that Stop ended reports the signal here.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Output returns what the process has written to its log file so far.
func (p *Process) Output() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read log %s: %v)", p.LogPath, err)
	}
	return string(data)
}

// Stop sends SIGTERM to the process group, waits up to 5 seconds for the process to exit,
// then sends SIGKILL. It returns once the process has exited.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.PID, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("send SIGTERM to %s: %w", p, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("send SIGKILL to %s: %w", p, err)
	}
	<-p.done
	return nil
}
