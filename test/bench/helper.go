package main

// The helper commands run inside lab namespaces: the driver starts its own executable with
// one of them through nsenter, so that every socket belongs to the namespace.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// helperCommands maps the first argument of a helper process to its function.
var helperCommands = map[string]func(args []string) error{
	"serve": serveCommand,
	"rr":    rrCommand,
	"crr":   crrCommand,
}

// rrResult is what the rr command prints: round-trip times of one run.
type rrResult struct {
	Count int     `json:"count"`
	Lost  int     `json:"lost"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
}

// crrResult is what the crr command prints: connections completed in one run.
type crrResult struct {
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	FirstError  string  `json:"first_error,omitempty"`
}

// serveCommand echoes TCP streams and UDP datagrams on one port until its lifetime ends.
func serveCommand(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	port := fs.Int("port", 7000, "TCP and UDP port to echo on")
	lifetime := fs.Duration("lifetime", 40*time.Minute, "exit after this time")
	if err := fs.Parse(args); err != nil {
		return err
	}

	addr := fmt.Sprintf(":%d", *port)
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return fmt.Errorf("listen on TCP %s: %w", addr, err)
	}
	// One UDP socket per local address, so that each echo leaves from the address its
	// request went to. A socket on the wildcard address would reply from the address
	// that routing picks, which a NAT or a connected client does not match.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list local addresses: %w", err)
	}
	for _, a := range addrs {
		ipNet, ok := a.(*net.IPNet)
		if !ok || ipNet.IP.To4() == nil {
			continue
		}
		udpAddr := net.JoinHostPort(ipNet.IP.String(), strconv.Itoa(*port))
		pc, err := net.ListenPacket("udp4", udpAddr)
		if err != nil {
			return fmt.Errorf("listen on UDP %s: %w", udpAddr, err)
		}
		go echoUDP(pc)
	}

	time.AfterFunc(*lifetime, func() {
		log.Printf("lifetime of %v is over, exiting", *lifetime)
		os.Exit(0)
	})
	for {
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept on TCP %s: %w", addr, err)
		}
		go echoTCP(conn)
	}
}

func echoTCP(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 64*1024)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func echoUDP(pc net.PacketConn) {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Printf("read UDP: %v", err)
			return
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			log.Printf("echo UDP to %v: %v", from, err)
		}
	}
}

// rrCommand sends one message at a time to an echo server, waits for the echo, and prints
// the percentiles of the round-trip times as JSON.
func rrCommand(args []string) error {
	fs := flag.NewFlagSet("rr", flag.ContinueOnError)
	proto := fs.String("proto", "tcp", "tcp or udp")
	addr := fs.String("addr", "", "server address, ip:port")
	duration := fs.Duration("duration", time.Second, "measuring time, after the warm-up")
	warmup := fs.Int("warmup", 200, "round trips before measuring, not counted")
	size := fs.Int("size", 64, "message size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *size < 8 || *size > 1400 {
		return fmt.Errorf("invalid message size %d: use 8 to 1400 bytes", *size)
	}
	var (
		res rrResult
		err error
	)
	switch *proto {
	case "tcp":
		res, err = rrTCP(*addr, *duration, *warmup, *size)
	case "udp":
		res, err = rrUDP(*addr, *duration, *warmup, *size)
	default:
		err = fmt.Errorf("invalid protocol %q: use tcp or udp", *proto)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func rrTCP(addr string, duration time.Duration, warmup, size int) (rrResult, error) {
	conn, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return rrResult{}, fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	msg := make([]byte, size)
	reply := make([]byte, size)
	var rtts []float64
	deadline := time.Time{}
	warmupEnd := time.Now().Add(maxWarmup)
	for i := 0; ; i++ {
		if i == warmup {
			deadline = time.Now().Add(duration)
		}
		if i < warmup && time.Now().After(warmupEnd) {
			return rrResult{}, fmt.Errorf("warm up with %s: %d round trips took over %v",
				addr, i, maxWarmup)
		}
		if i > warmup && time.Now().After(deadline) {
			break
		}
		// A stuck server fails the run instead of hanging it.
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		start := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return rrResult{}, fmt.Errorf("send to %s: %w", addr, err)
		}
		if _, err := io.ReadFull(conn, reply); err != nil {
			return rrResult{}, fmt.Errorf("receive echo from %s: %w", addr, err)
		}
		if i >= warmup {
			rtts = append(rtts, float64(time.Since(start).Nanoseconds())/1e3)
		}
	}
	return rrResultOf(rtts, 0), nil
}

// maxWarmup bounds the warm-up of the rr command, which fails when the server does not
// echo its first round trips in that time.
const maxWarmup = 3 * time.Second

// udpReplyTimeout is how long rrUDP waits for an echo before it counts the message lost.
const udpReplyTimeout = 200 * time.Millisecond

func rrUDP(addr string, duration time.Duration, warmup, size int) (rrResult, error) {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return rrResult{}, fmt.Errorf("open UDP socket to %s: %w", addr, err)
	}
	defer conn.Close()
	msg := make([]byte, size)
	reply := make([]byte, 2048)
	var (
		rtts      []float64
		lost      int
		deadline  time.Time
		warmupEnd = time.Now().Add(maxWarmup)
	)
	for seq := uint64(0); ; seq++ {
		if seq == uint64(warmup) {
			deadline = time.Now().Add(duration)
		}
		if seq < uint64(warmup) && time.Now().After(warmupEnd) {
			return rrResult{}, fmt.Errorf("warm up with %s: %d round trips took over %v",
				addr, seq, maxWarmup)
		}
		if seq > uint64(warmup) && time.Now().After(deadline) {
			break
		}
		putSeq(msg, seq)
		start := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return rrResult{}, fmt.Errorf("send to %s: %w", addr, err)
		}
		ok, err := awaitEcho(conn, reply, seq)
		if err != nil {
			return rrResult{}, err
		}
		if seq < uint64(warmup) {
			continue
		}
		if !ok {
			lost++
			continue
		}
		rtts = append(rtts, float64(time.Since(start).Nanoseconds())/1e3)
	}
	if len(rtts) == 0 {
		return rrResult{}, fmt.Errorf("no echo from %s: all %d messages were lost", addr, lost)
	}
	return rrResultOf(rtts, lost), nil
}

// awaitEcho reads datagrams until the echo of seq arrives or udpReplyTimeout passes. Late
// echoes of earlier messages are skipped.
func awaitEcho(conn net.Conn, buf []byte, seq uint64) (bool, error) {
	_ = conn.SetReadDeadline(time.Now().Add(udpReplyTimeout))
	for {
		n, err := conn.Read(buf)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("receive echo: %w", err)
		}
		if n >= 8 && getSeq(buf) == seq {
			return true, nil
		}
	}
}

func putSeq(b []byte, seq uint64) {
	for i := range 8 {
		b[i] = byte(seq >> (8 * i))
	}
}

func getSeq(b []byte) uint64 {
	var seq uint64
	for i := range 8 {
		seq |= uint64(b[i]) << (8 * i)
	}
	return seq
}

func rrResultOf(rtts []float64, lost int) rrResult {
	return rrResult{
		Count: len(rtts),
		Lost:  lost,
		P50us: percentile(rtts, 50),
		P99us: percentile(rtts, 99),
	}
}

// crrCommand opens TCP connections to an echo server from several workers for a fixed
// time. Each connection sends one byte, waits for its echo and closes with a reset
// (SO_LINGER 0), so that no socket stays in TIME_WAIT and the client never runs out of
// ports.
func crrCommand(args []string) error {
	fs := flag.NewFlagSet("crr", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address, ip:port")
	duration := fs.Duration("duration", 2*time.Second, "measuring time")
	workers := fs.Int("workers", 2, "connections in flight at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *workers < 1 || *workers > 64 {
		return fmt.Errorf("invalid worker count %d: use 1 to 64", *workers)
	}

	var (
		done, failed atomic.Int64
		firstErr     error
		errOnce      sync.Once
		wg           sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(*duration)
	for range *workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := oneConnection(*addr); err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	res := crrResult{
		Connections: int(done.Load()),
		Errors:      int(failed.Load()),
		Seconds:     time.Since(start).Seconds(),
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func oneConnection(addr string) error {
	conn, err := net.DialTimeout("tcp4", addr, time.Second)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	tcp := conn.(*net.TCPConn)
	defer func() {
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
	}()
	_ = tcp.SetDeadline(time.Now().Add(time.Second))
	if _, err := tcp.Write([]byte{1}); err != nil {
		return fmt.Errorf("send to %s: %w", addr, err)
	}
	var b [1]byte
	if _, err := io.ReadFull(tcp, b[:]); err != nil {
		return fmt.Errorf("receive echo from %s: %w", addr, err)
	}
	return nil
}
