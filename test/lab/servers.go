package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
)

// Server is a TCP echo server or a UDP responder that a namespace runs for a
// test, such as a host on the internet in ext. Its sockets live in the
// namespace and goroutines of this process serve them. The caller closes it.
type Server struct {
	// Network is "tcp" or "udp".
	Network string
	// Addr is the listening address.
	Addr netip.AddrPort

	listener net.Listener
	conn     net.PacketConn
	wg       sync.WaitGroup
	once     sync.Once

	mu    sync.Mutex
	peers []netip.AddrPort
	open  map[net.Conn]bool
}

// StartTCPEcho starts a server on addr in the namespace that sends back
// every byte a connection sends, until the client closes its side. It holds
// any number of connections at once.
func (n *Namespace) StartTCPEcho(addr netip.AddrPort) (*Server, error) {
	s := &Server{Network: "tcp", Addr: addr, open: map[net.Conn]bool{}}
	var err error
	if s.listener, err = n.Listen(addr.String()); err != nil {
		return nil, fmt.Errorf("start TCP echo server: %w", err)
	}
	s.wg.Add(1)
	go s.serveTCP()
	return s, nil
}

// StartUDPResponder starts a server on addr in the namespace that replies to
// every datagram with one of replySize bytes: the sender's address as
// "ip:port\n", padded with '.'. A reply larger than the path MTU leaves ext
// in fragments.
func (n *Namespace) StartUDPResponder(addr netip.AddrPort, replySize int) (*Server, error) {
	s := &Server{Network: "udp", Addr: addr}
	err := n.Do(func() error {
		var err error
		s.conn, err = net.ListenPacket("udp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start UDP responder on %v in %s: %w", addr, n, err)
	}
	s.wg.Add(1)
	go s.serveUDP(replySize)
	return s, nil
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.listener.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.peers = append(s.peers, c.RemoteAddr().(*net.TCPAddr).AddrPort())
		s.open[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			io.Copy(c, c)
			c.Close()
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) serveUDP(replySize int) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		_, peer, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		from := peer.(*net.UDPAddr).AddrPort()
		s.mu.Lock()
		s.peers = append(s.peers, from)
		s.mu.Unlock()
		reply := []byte(from.String() + "\n")
		for len(reply) < replySize {
			reply = append(reply, '.')
		}
		s.conn.WriteTo(reply, peer)
	}
}

// Peers returns the source address of every connection or datagram the
// server received, in order of arrival.
func (s *Server) Peers() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.peers...)
}

// Close stops the server, closes its connections and waits for its
// goroutines to return.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.listener != nil {
			err = s.listener.Close()
		}
		if s.conn != nil {
			err = s.conn.Close()
		}
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// DialTCP opens a TCP connection from inside the namespace to addr, from
// local port localPort unless it is zero.
func (n *Namespace) DialTCP(ctx context.Context, addr netip.AddrPort,
	localPort uint16) (*net.TCPConn, error) {
	d := net.Dialer{}
	if localPort != 0 {
		d.LocalAddr = &net.TCPAddr{Port: int(localPort)}
	}
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect from %s to %v: %w", n, addr, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, errors.New("dial returned no TCP connection")
	}
	return tc, nil
}
