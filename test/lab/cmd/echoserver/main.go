// Command echoserver replies to every line that a TCP client sends with the
// client's address as the server sees it ("ip:port\n") and keeps each
// connection open until the client closes it. The NAT tests run it in the
// ext namespace as its own process, so that the server ends of thousands of
// connections do not count against the open-file limit of the test process.
//
// Usage: echoserver -listen ADDR
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
)

func main() {
	listen := flag.String("listen", "", "TCP `address` to listen on, such as 203.0.113.10:8081")
	flag.Parse()
	if *listen == "" {
		fmt.Fprintln(os.Stderr, "echoserver: missing -listen ADDR")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echoserver: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "echoserver: listening on %s\n", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "echoserver: accept: %v\n", err)
			os.Exit(1)
		}
		go serve(c)
	}
}

func serve(c net.Conn) {
	defer c.Close()
	peer := c.RemoteAddr().String() + "\n"
	lines := bufio.NewScanner(c)
	for lines.Scan() {
		if _, err := c.Write([]byte(peer)); err != nil {
			return
		}
	}
}
