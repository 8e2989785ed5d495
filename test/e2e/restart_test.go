package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// upgradeVersion is the version string of the rebuilt ferryd that the upgrade starts.
const upgradeVersion = "v0.0.0-upgrade-test"

// restarts is the number of ferryd restarts per node, alternating SIGTERM and SIGKILL,
// before the upgrade.
const restarts = 10

// TestFerrydRestartsLoseNothing restarts ferryd on both nodes 10 times, with SIGTERM and
// SIGKILL alternately, then upgrades it to a rebuilt binary. Meanwhile a pod pings a pod on
// the other node every 10 ms and keeps a TCP stream open through the masquerade to the
// internet host. No echo may go unanswered, the stream must not reset, and the internet
// host must see one connection from one port throughout.
func TestFerrydRestartsLoseNothing(t *testing.T) {
	upgradeDir := buildUpgrade(t)
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	nodes := []*lab.Node{w0, w1}
	for _, n := range nodes {
		waitReady(t, n, n.Ferryd())
	}
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	ctx := context.Background()

	// One restart without traffic sizes the ping, with room for a slow machine.
	began := time.Now()
	restartFerryd(t, w0, binDir, syscall.SIGTERM)
	perRestart := time.Since(began)
	total := time.Duration(2*(restarts+1))*perRestart*3 + 10*time.Second
	count := int(total / (10 * time.Millisecond))
	t.Logf("one restart took %s; pinging %d times", perRestart, count)

	stream := startStream(t, l.Ext, a, netip.AddrPortFrom(lab.InternetIP, 7300))
	pinger, err := a.Start(ctx, "ping", "-n", "-q", "-i", "0.01", "-c", strconv.Itoa(count),
		b.IP.String())
	if err != nil {
		t.Fatalf("start ping: %v", err)
	}

	for i := range restarts {
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		for _, n := range nodes {
			restartFerryd(t, n, binDir, sig)
		}
	}
	for _, n := range nodes {
		p := restartFerryd(t, n, upgradeDir, syscall.SIGTERM)
		if !strings.Contains(p.Output(), "version="+upgradeVersion) {
			t.Errorf("ferryd on %s after the upgrade does not log version %s:\n%s", n.Name,
				upgradeVersion, p.Output())
		}
	}
	select {
	case <-pinger.Done():
		t.Errorf("the ping ended before the last restart: the restarts are not all covered")
	default:
	}
	serverPort := stream.stop(t)

	select {
	case <-pinger.Done():
	case <-time.After(total + 30*time.Second):
		t.Fatal("ping did not finish")
	}
	out := pinger.Output()
	want := fmt.Sprintf("%d packets transmitted, %d received", count, count)
	if !strings.Contains(out, want) {
		t.Errorf("ping across the restarts lost echoes, want %q:\n%s", want, out)
	}

	// The NAT mapping that the internet host saw is the one still in the table.
	maps, err := datapath.OpenMaps(w0.BPFFSDir())
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	entries, err := maps.NATEntries()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.Direction == datapath.NATEgress && e.Src.Addr() == a.IP &&
			e.Dst == netip.AddrPortFrom(lab.InternetIP, 7300) {
			found = true
			if e.TranslateTo.Port() != serverPort {
				t.Errorf("NAT entry of the stream translates to port %d, the internet host "+
					"saw %d", e.TranslateTo.Port(), serverPort)
			}
		}
	}
	if !found {
		t.Errorf("no NAT entry of the stream from %s left", a.IP)
	}

	// Any number of restarts leave one ferry program per hook.
	for _, n := range nodes {
		var h agenttest.HookPrograms
		if err := n.Do(func() error {
			link, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			h, err = agenttest.CountHookPrograms(link.Index)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if h != (agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}) {
			t.Errorf("%s uplink programs after the restarts = %+v, want one tcx program per "+
				"hook", n.Name, h)
		}
	}
}

// buildUpgrade builds ferryd with another version string into a temporary directory.
func buildUpgrade(t *testing.T) string {
	t.Helper()
	lab.SkipUnlessPrivileged(t)
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+upgradeVersion,
		"-o", filepath.Join(dir, "ferryd"), "./cmd/ferryd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the upgraded ferryd: %v\n%s", err, out)
	}
	return dir
}

// restartFerryd stops ferryd on n with sig, starts the ferryd of binDir and waits until it
// is ready.
func restartFerryd(t *testing.T, n *lab.Node, binDir string, sig syscall.Signal) *lab.Process {
	t.Helper()
	if old := n.Ferryd(); old != nil && sig == syscall.SIGKILL {
		if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill ferryd on %s: %v", n.Name, err)
		}
		<-old.Done()
	}
	// RestartFerryd stops a running ferryd with SIGTERM first.
	p, err := n.RestartFerryd(context.Background(), binDir)
	if err != nil {
		t.Fatalf("restart ferryd on %s: %v", n.Name, err)
	}
	waitReady(t, n, p)
	return p
}

// stream is a TCP connection from a pod to an echo server in another namespace that
// carries a message every 10 ms and checks each echo.
type stream struct {
	listener net.Listener
	conn     net.Conn
	done     chan struct{}
	wg       sync.WaitGroup
	accepted atomic.Int32
	// port is the source port of the first connection as the server saw it.
	port     atomic.Uint32
	echoed   atomic.Int64
	mu       sync.Mutex
	failures []error
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	s.failures = append(s.failures, err)
	s.mu.Unlock()
}

// startStream starts an echo server on addr in server and connects to it from client.
func startStream(t *testing.T, server *lab.Namespace, client *lab.Pod,
	addr netip.AddrPort) *stream {
	t.Helper()
	s := &stream{done: make(chan struct{})}
	err := server.Do(func() error {
		var err error
		s.listener, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	s.wg.Add(1)
	go s.serve()

	err = client.Do(func() error {
		var err error
		s.conn, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	})
	if err != nil {
		s.listener.Close()
		t.Fatalf("connect from %s to %s: %v", client.Name, addr, err)
	}
	s.wg.Add(1)
	go s.talk()
	t.Cleanup(func() {
		s.halt()
	})
	return s
}

func (s *stream) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return
		}
		if s.accepted.Add(1) == 1 {
			s.port.Store(uint32(conn.RemoteAddr().(*net.TCPAddr).Port))
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conn.Close()
			_, _ = io.Copy(conn, conn)
		}()
	}
}

// talk sends numbered messages and reads each echo until done.
func (s *stream) talk() {
	defer s.wg.Done()
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		select {
		case <-s.done:
			return
		case <-time.After(10 * time.Millisecond):
		}
		msg := []byte(fmt.Sprintf("%063d", i))
		_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.conn.Write(append(msg, '\n')); err != nil {
			s.fail(fmt.Errorf("write message %d: %w", i, err))
			return
		}
		if _, err := io.ReadFull(s.conn, buf); err != nil {
			s.fail(fmt.Errorf("read echo %d: %w", i, err))
			return
		}
		if !bytes.Equal(buf[:63], msg) {
			s.fail(fmt.Errorf("echo %d = %q, want %q", i, buf[:63], msg))
			return
		}
		s.echoed.Add(1)
	}
}

// halt stops the stream and the server once.
func (s *stream) halt() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	if s.conn != nil {
		s.conn.Close()
	}
	s.listener.Close()
	s.wg.Wait()
}

// stop ends the stream, checks it, and returns the port the server saw.
func (s *stream) stop(t *testing.T) uint16 {
	t.Helper()
	s.halt()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.failures {
		if errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the TCP stream was reset: %v", err)
			continue
		}
		t.Errorf("the TCP stream failed: %v", err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("the internet host accepted %d connections, want 1", n)
	}
	if s.echoed.Load() == 0 {
		t.Errorf("no message of the TCP stream came back")
	}
	t.Logf("the TCP stream carried %d messages from port %d", s.echoed.Load(), s.port.Load())
	return uint16(s.port.Load())
}
