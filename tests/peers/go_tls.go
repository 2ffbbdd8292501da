// A Go crypto/tls peer for the TLS tests (standard library only; Debian's
// golang-go builds it offline).
//
//	go_tls server CERT KEY PORT h1|h2
//	    HTTPS on 127.0.0.1:PORT: /big answers 40,960 bytes, /status/N status
//	    N with a 12-byte body, anything else 200 "ok\n".
//	go_tls client h1|h2 PAUSE_MS BASE PATH...
//	    One keep-alive connection for every PATH, in order; after the TLS
//	    handshake it waits PAUSE_MS (the agent attaches to programs it saw
//	    handshake). Prints "STATUS LENGTH" per response.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: go_tls server CERT KEY PORT h1|h2 | client h1|h2 PAUSE_MS BASE PATH...")
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4], os.Args[5] == "h2")
	case "client":
		pause, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail(err.Error())
		}
		get(os.Args[2] == "h2", time.Duration(pause)*time.Millisecond, os.Args[4], os.Args[5:])
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(2)
}

func serve(cert, key, port string, h2 bool) {
	big := strings.Repeat("x", 40960)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/big":
			io.WriteString(w, big)
		case strings.HasPrefix(r.URL.Path, "/status/"):
			code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
			if err != nil {
				code = 400
			}
			w.WriteHeader(code)
			io.WriteString(w, "status body\n")
		default:
			io.WriteString(w, "ok\n")
		}
	})
	server := &http.Server{Addr: "127.0.0.1:" + port, Handler: handler}
	if !h2 {
		// A non-nil empty map turns HTTP/2 off (net/http's documented switch).
		server.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	fail(server.ListenAndServeTLS(cert, key).Error())
}

func get(h2 bool, pause time.Duration, base string, paths []string) {
	config := &tls.Config{InsecureSkipVerify: true}
	if h2 {
		config.NextProtos = []string{"h2"}
	} else {
		config.NextProtos = []string{"http/1.1"}
	}
	transport := &http.Transport{
		TLSClientConfig:   config,
		ForceAttemptHTTP2: h2,
		// The handshake, then the pause, before the first request.
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, config)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			time.Sleep(pause)
			return conn, nil
		},
	}
	if !h2 {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: transport}
	for _, path := range paths {
		response, err := client.Get(base + path)
		if err != nil {
			fail(err.Error())
		}
		body, err := io.ReadAll(response.Body)
		response.Body.Close()
		if err != nil {
			fail(err.Error())
		}
		fmt.Printf("%d %d\n", response.StatusCode, len(body))
	}
}
