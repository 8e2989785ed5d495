package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// queryTimeout bounds QueryPeerReporter when ctx has no earlier deadline.
const queryTimeout = 3 * time.Second

// PeerReporter is a server in a namespace that replies to each TCP connection, or each UDP
// datagram, with the peer address it saw as "ip:port\n". It closes a TCP connection after
// the reply. Checks use it to see which source address survives NAT on the way.
type PeerReporter struct {
	// Network is "tcp" or "udp".
	Network string
	// Addr is the listening address.
	Addr netip.AddrPort

	ns       *Namespace
	listener net.Listener
	conn     net.PacketConn
	wg       sync.WaitGroup
	once     sync.Once
	received atomic.Int64
}

// Received returns how many connections or datagrams the reporter has received. It counts
// each one before it replies, so a client that has its reply is already counted.
func (r *PeerReporter) Received() int { return int(r.received.Load()) }

// StartPeerReporter starts a peer reporter on addr inside the namespace. The socket is
// created on a thread inside the namespace and served by goroutines of this process. The
// lab closes the reporter on Close, or when the pod that contains it is deleted.
func (n *Namespace) StartPeerReporter(network string, addr netip.AddrPort) (*PeerReporter, error) {
	r := &PeerReporter{Network: network, Addr: addr, ns: n}
	err := n.Do(func() error {
		var err error
		switch network {
		case "tcp":
			r.listener, err = net.Listen("tcp", addr.String())
		case "udp":
			r.conn, err = net.ListenPacket("udp", addr.String())
		default:
			err = fmt.Errorf("unsupported network %q: use tcp or udp", network)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start peer reporter on %s %v in %s: %w", network, addr, n, err)
	}

	l := n.lab
	l.mu.Lock()
	if err := l.errIfClosed(); err != nil {
		l.mu.Unlock()
		r.Close()
		return nil, err
	}
	l.reporters = append(l.reporters, r)
	l.mu.Unlock()

	r.wg.Add(1)
	if r.listener != nil {
		go r.serveTCP()
	} else {
		go r.serveUDP()
	}
	return r, nil
}

func (r *PeerReporter) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.listener.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			r.received.Add(1)
			c.SetDeadline(time.Now().Add(queryTimeout))
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		}()
	}
}

func (r *PeerReporter) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		_, peer, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		r.received.Add(1)
		r.conn.WriteTo([]byte(peer.String()+"\n"), peer)
	}
}

// Close stops the reporter and waits for its goroutines to return.
func (r *PeerReporter) Close() error {
	var err error
	r.once.Do(func() {
		if r.listener != nil {
			err = r.listener.Close()
		}
		if r.conn != nil {
			err = r.conn.Close()
		}
		r.wg.Wait()
	})
	return err
}

// QueryPeerReporter connects from inside the namespace to the peer reporter at addr and
// returns the source address the reporter saw. For UDP it sends up to three datagrams,
// one second apart, until one gets a reply.
func (n *Namespace) QueryPeerReporter(ctx context.Context, network string,
	addr netip.AddrPort) (netip.AddrPort, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, queryTimeout)
		defer cancel()
	}
	var line string
	err := n.Do(func() error {
		var err error
		switch network {
		case "tcp":
			line, err = queryTCP(ctx, addr)
		case "udp":
			line, err = queryUDP(ctx, addr)
		default:
			err = fmt.Errorf("unsupported network %q: use tcp or udp", network)
		}
		return err
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("query peer reporter %s %v from %s: %w",
			network, addr, n, err)
	}
	seen, err := netip.ParseAddrPort(line)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse reply %q of peer reporter %s %v: %w",
			line, network, addr, err)
	}
	return seen, nil
}

// queryTCP must run on a thread inside the namespace, because the socket is created there.
func queryTCP(ctx context.Context, addr netip.AddrPort) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// queryUDP must run on a thread inside the namespace, because the socket is created there.
func queryUDP(ctx context.Context, addr netip.AddrPort) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 128)
	var lastErr error
	for range 3 {
		if err := ctx.Err(); err != nil {
			break
		}
		if _, err := c.Write([]byte("?\n")); err != nil {
			lastErr = err
			continue
		}
		deadline := time.Now().Add(time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c.SetReadDeadline(deadline)
		k, err := c.Read(buf)
		if err == nil {
			return strings.TrimSpace(string(buf[:k])), nil
		}
		lastErr = err
		// A refused datagram reports ECONNREFUSED on the next read at once, so wait for
		// the rest of the second before the next try.
		time.Sleep(time.Until(deadline))
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return "", errors.Join(errors.New("no reply to 3 datagrams"), lastErr)
}
