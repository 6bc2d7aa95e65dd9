// go-turbotunnel is ptkit's Go reference peer for the Snowflake turbotunnel data path.
//
// It is written from ptkit's protocol notes (docs: /work/shared/specs/snowflake.md §2),
// not copied from snowflake, and uses the real libraries snowflake 2.5.1 is built on:
// kcp-go 5.6.1, smux 1.5.16 and gorilla/websocket 1.5.0 (all from Debian's gocode).
//
//	go-turbotunnel server -listen 127.0.0.1:P -upstream 127.0.0.1:Q
//	go-turbotunnel client -url ws://127.0.0.1:P/ -echo-bytes N [-streams K] [-switches S]
//
// The server behaves like snowflake-server with a plain ORPort: every smux stream is
// copied to a new TCP connection to -upstream. The client opens K streams, writes N random
// bytes on each, reads N bytes back, checks them, and prints "OK <seconds>"; with -switches
// it replaces its WebSocket (same ClientID, same KCP session) mid-transfer.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/kcp-go"
	"github.com/xtaci/smux"
)

// token is the 8-byte turbotunnel magic that starts every WebSocket (§2.2).
var token = []byte{0x12, 0x93, 0x60, 0x5d, 0x27, 0x81, 0x75, 0xf5}

const (
	queueSize   = 512           // receive queue and per-ClientID send queues (§2.4)
	clientTTL   = time.Minute   // expiry of an idle ClientID send queue (§2.4)
	maxPacket   = 1500          // kcp-go's receive buffer; bigger packets are not sent
	maxChunkLen = (1 << 20) - 1 // 20-bit length: the longest 3-byte prefix (§2.3)
	streamBuf   = 1 << 20       // smux MaxStreamBuffer on both sides (§2.6)
	wsMsgLimit  = 2048          // writes are cut into WebSocket messages of at most this
	dialTimeout = 10 * time.Second
)

// ---------------------------------------------------------------- encapsulation (§2.3)

// writeData writes one data chunk: the minimal 1–3 byte prefix, then p.
func writeData(w io.Writer, p []byte) error {
	n := len(p)
	var pfx []byte
	switch {
	case n <= 63:
		pfx = []byte{0x80 | byte(n)}
	case n <= 8191:
		pfx = []byte{0xc0 | byte(n>>7), byte(n & 0x7f)}
	case n <= maxChunkLen:
		pfx = []byte{0xc0 | byte(n>>14), 0x80 | byte((n>>7)&0x7f), byte(n & 0x7f)}
	default:
		return fmt.Errorf("packet of %d bytes is too long to encapsulate", n)
	}
	if _, err := w.Write(pfx); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

var errPrefixTooLong = errors.New("encapsulation: length prefix longer than 3 bytes")

// readData returns the next data chunk, skipping padding. A clean EOF before a prefix is
// io.EOF; EOF inside a prefix or body is io.ErrUnexpectedEOF. Chunks longer than buf are
// truncated to len(buf) (as a datagram read would be), the rest is discarded.
func readData(r *bufio.Reader, buf []byte) (int, error) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err // io.EOF: clean end
		}
		isData := b&0x80 != 0
		n := int(b & 0x3f)
		more := b&0x40 != 0
		for i := 0; more; i++ {
			if i == 2 {
				return 0, errPrefixTooLong
			}
			c, err := r.ReadByte()
			if err != nil {
				return 0, io.ErrUnexpectedEOF
			}
			n = n<<7 | int(c&0x7f)
			more = c&0x80 != 0
		}
		if !isData {
			if _, err := r.Discard(n); err != nil {
				return 0, io.ErrUnexpectedEOF
			}
			continue
		}
		keep := n
		if keep > len(buf) {
			keep = len(buf)
		}
		if _, err := io.ReadFull(r, buf[:keep]); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		if _, err := r.Discard(n - keep); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		return keep, nil
	}
}

// ---------------------------------------------------------------- WebSocket as a byte stream

// wsStream turns a gorilla connection into a byte stream: message boundaries mean nothing
// (§2.1). Reads concatenate binary and text messages; each Write becomes binary messages
// of at most wsMsgLimit bytes. Write is safe for one writer at a time only.
type wsStream struct {
	ws *websocket.Conn
	r  io.Reader
}

func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			_, r, err := s.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return 0, io.EOF
				}
				return 0, err
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if err == io.EOF {
			s.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (s *wsStream) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := len(p)
		if n > wsMsgLimit {
			n = wsMsgLimit
		}
		if err := s.ws.WriteMessage(websocket.BinaryMessage, p[:n]); err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

// ---------------------------------------------------------------- addresses

// clientAddr is a ClientID used as a net.Addr: kcp-go keys server sessions by Addr.String().
type clientAddr [8]byte

func (a clientAddr) Network() string { return "turbotunnel" }
func (a clientAddr) String() string  { return hex.EncodeToString(a[:]) }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "dummy" }
func (dummyAddr) String() string  { return "dummy" }

// ---------------------------------------------------------------- server packet conn (§2.4)

type taggedPacket struct {
	from clientAddr
	p    []byte
}

type sendQueue struct {
	ch       chan []byte
	lastUsed time.Time
}

// queuePacketConn is the net.PacketConn kcp-go's listener runs on: all WebSockets feed one
// receive queue tagged with their ClientID; each ClientID has its own send queue that the
// WebSockets of that ClientID drain.
type queuePacketConn struct {
	recv    chan taggedPacket
	mu      sync.Mutex
	clients map[clientAddr]*sendQueue
	closed  chan struct{}
	once    sync.Once
}

func newQueuePacketConn() *queuePacketConn {
	c := &queuePacketConn{
		recv:    make(chan taggedPacket, queueSize),
		clients: make(map[clientAddr]*sendQueue),
		closed:  make(chan struct{}),
	}
	go c.sweep()
	return c
}

func (c *queuePacketConn) sweep() {
	t := time.NewTicker(clientTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case now := <-t.C:
			c.mu.Lock()
			for id, q := range c.clients {
				if now.Sub(q.lastUsed) > clientTTL {
					close(q.ch)
					delete(c.clients, id)
				}
			}
			c.mu.Unlock()
		}
	}
}

// outgoing returns the send queue of a ClientID, creating it on first use.
func (c *queuePacketConn) outgoing(id clientAddr) chan []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.clients[id]
	if !ok {
		q = &sendQueue{ch: make(chan []byte, queueSize)}
		c.clients[id] = q
	}
	q.lastUsed = time.Now()
	return q.ch
}

// incoming queues a packet from a WebSocket; it is dropped when the queue is full.
func (c *queuePacketConn) incoming(id clientAddr, p []byte) {
	select {
	case c.recv <- taggedPacket{id, p}:
	case <-c.closed:
	default:
	}
}

func (c *queuePacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-c.recv:
		return copy(p, pkt.p), pkt.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *queuePacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	id, ok := addr.(clientAddr)
	if !ok {
		return 0, fmt.Errorf("not a ClientID: %v", addr)
	}
	buf := append([]byte(nil), p...)
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	q, ok := c.clients[id]
	if !ok {
		q = &sendQueue{ch: make(chan []byte, queueSize)}
		c.clients[id] = q
	}
	q.lastUsed = time.Now()
	select {
	case q.ch <- buf:
	default: // full: dropped, KCP retransmits
	}
	return len(p), nil
}

func (c *queuePacketConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *queuePacketConn) LocalAddr() net.Addr                { return dummyAddr{} }
func (c *queuePacketConn) SetDeadline(t time.Time) error      { return nil }
func (c *queuePacketConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *queuePacketConn) SetWriteDeadline(t time.Time) error { return nil }

// ---------------------------------------------------------------- KCP / smux settings

func tuneKCP(s *kcp.UDPSession) {
	s.SetStreamMode(true)
	s.SetWindowSize(65535, 65535)
	s.SetNoDelay(0, 0, 0, 1)
}

func smuxConfig(keepAliveTimeout time.Duration) *smux.Config {
	cfg := smux.DefaultConfig()
	cfg.Version = 2
	cfg.KeepAliveTimeout = keepAliveTimeout
	cfg.MaxStreamBuffer = streamBuf
	return cfg
}

// ---------------------------------------------------------------- server

type server struct {
	pconn    *queuePacketConn
	upstream string
	upgrader websocket.Upgrader
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer ws.Close()
	stream := &wsStream{ws: ws}
	br := bufio.NewReaderSize(stream, 4096)
	var pre [16]byte
	if _, err := io.ReadFull(br, pre[:8]); err != nil {
		return // closed before the token: quietly
	}
	if !bytes.Equal(pre[:8], token) {
		log.Printf("unsupported oneshot connection")
		return
	}
	if _, err := io.ReadFull(br, pre[8:]); err != nil {
		log.Printf("reading ClientID: %v", err)
		return
	}
	var id clientAddr
	copy(id[:], pre[8:])

	done := make(chan struct{})
	go func() {
		// Writer: drains this ClientID's send queue until the reader ends or the queue closes.
		defer ws.Close()
		bw := bufio.NewWriterSize(stream, wsMsgLimit)
		q := s.pconn.outgoing(id)
		for {
			select {
			case <-done:
				return
			case p, ok := <-q:
				if !ok {
					return
				}
				if writeData(bw, p) != nil || bw.Flush() != nil {
					return
				}
			}
		}
	}()
	defer close(done)
	buf := make([]byte, maxPacket)
	for {
		n, err := readData(br, buf)
		if err != nil {
			if err != io.EOF {
				log.Printf("reading from WebSocket of %v: %v", id, err)
			}
			return
		}
		s.pconn.incoming(id, append([]byte(nil), buf[:n]...))
	}
}

func (s *server) acceptSessions(ln *kcp.Listener) {
	for {
		conn, err := ln.AcceptKCP()
		if err != nil {
			log.Printf("AcceptKCP: %v", err)
			return
		}
		go s.serveSession(conn)
	}
}

func (s *server) serveSession(conn *kcp.UDPSession) {
	defer conn.Close()
	tuneKCP(conn)
	sess, err := smux.Server(conn, smuxConfig(4*time.Minute))
	if err != nil {
		log.Printf("smux.Server: %v", err)
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go s.serveStream(st)
	}
}

func (s *server) serveStream(st *smux.Stream) {
	defer st.Close()
	up, err := net.DialTimeout("tcp", s.upstream, dialTimeout)
	if err != nil {
		log.Printf("failed to connect to upstream: %v", err)
		return
	}
	tcp := up.(*net.TCPConn)
	defer tcp.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(st, tcp) // upstream → client; its end closes the stream (FIN)
		tcp.CloseRead()
		st.Close()
	}()
	go func() {
		defer wg.Done()
		io.Copy(tcp, st) // client → upstream; FIN/EOF shuts down the write side
		tcp.CloseWrite()
		st.Close()
	}()
	wg.Wait()
}

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "WebSocket listen address")
	upstream := fs.String("upstream", "", "TCP address every stream is copied to")
	fs.Parse(args)
	if *upstream == "" {
		return errors.New("-upstream is required")
	}
	pconn := newQueuePacketConn()
	ln, err := kcp.ServeConn(nil, 0, 0, pconn)
	if err != nil {
		return err
	}
	srv := &server{
		pconn:    pconn,
		upstream: *upstream,
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
	}
	go srv.acceptSessions(ln)
	tl, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// The harness reads this line to learn the port.
	fmt.Printf("LISTEN %s\n", tl.Addr())
	os.Stdout.Sync()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	return hs.Serve(tl)
}

// ---------------------------------------------------------------- client

// redialPacketConn is the client's net.PacketConn: a 512-packet send queue that drops when
// full and outlives any one WebSocket (like the client's redial layer), and a receive queue
// that every WebSocket of the session feeds. switchCarrier replaces the WebSocket; packets
// written in between wait in the send queue.
type redialPacketConn struct {
	url      string
	clientID [8]byte
	send     chan []byte
	recv     chan []byte
	closed   chan struct{}
	once     sync.Once
	mu       sync.Mutex
	current  *carrier
}

type carrier struct {
	ws   *websocket.Conn
	done chan struct{}
	once sync.Once
}

func (c *carrier) stop() {
	c.once.Do(func() {
		close(c.done)
		c.ws.Close()
	})
}

func newRedialPacketConn(url string) (*redialPacketConn, error) {
	c := &redialPacketConn{
		url:    url,
		send:   make(chan []byte, queueSize),
		recv:   make(chan []byte, queueSize),
		closed: make(chan struct{}),
	}
	rand.Read(c.clientID[:])
	return c, c.dial()
}

// dial opens a WebSocket, sends the token and the (same) ClientID, and starts its
// reader and writer.
func (c *redialPacketConn) dial() error {
	ws, _, err := websocket.DefaultDialer.Dial(c.url, nil)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", c.url, err)
	}
	pre := append(append([]byte(nil), token...), c.clientID[:]...)
	if err := ws.WriteMessage(websocket.BinaryMessage, pre); err != nil {
		ws.Close()
		return err
	}
	car := &carrier{ws: ws, done: make(chan struct{})}
	c.mu.Lock()
	c.current = car
	c.mu.Unlock()
	st := &wsStream{ws: ws}
	go func() {
		defer car.stop()
		bw := bufio.NewWriterSize(st, wsMsgLimit)
		for {
			select {
			case <-car.done:
				return
			case <-c.closed:
				return
			case p := <-c.send:
				if writeData(bw, p) != nil || bw.Flush() != nil {
					return // this packet is lost; KCP retransmits
				}
			}
		}
	}()
	go func() {
		defer car.stop()
		br := bufio.NewReaderSize(st, 4096)
		buf := make([]byte, maxPacket)
		for {
			n, err := readData(br, buf)
			if err != nil {
				return
			}
			select {
			case c.recv <- append([]byte(nil), buf[:n]...):
			case <-car.done:
				return
			case <-c.closed:
				return
			default: // full: dropped
			}
		}
	}()
	return nil
}

// switchCarrier closes the current WebSocket, waits gap, and opens a new one.
func (c *redialPacketConn) switchCarrier(gap time.Duration) error {
	c.mu.Lock()
	old := c.current
	c.mu.Unlock()
	if old != nil {
		old.stop()
	}
	time.Sleep(gap)
	return c.dial()
}

func (c *redialPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case pkt := <-c.recv:
		return copy(p, pkt), dummyAddr{}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *redialPacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case c.send <- append([]byte(nil), p...):
	default: // full: dropped
	}
	return len(p), nil
}

func (c *redialPacketConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.mu.Lock()
		if c.current != nil {
			c.current.stop()
		}
		c.mu.Unlock()
	})
	return nil
}
func (c *redialPacketConn) LocalAddr() net.Addr                { return dummyAddr{} }
func (c *redialPacketConn) SetDeadline(t time.Time) error      { return nil }
func (c *redialPacketConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *redialPacketConn) SetWriteDeadline(t time.Time) error { return nil }

const chunk = 64 << 10

// echoOnce writes n random bytes on a new stream in 64 KiB chunks while reading them back.
// afterChunk, when not nil, runs after each chunk written (for carrier switches).
func echoOnce(sess *smux.Session, n int, afterChunk func(i int) error) error {
	st, err := sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	data := make([]byte, n)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	werr := make(chan error, 1)
	go func() {
		for i := 0; i*chunk < n; i++ {
			end := (i + 1) * chunk
			if end > n {
				end = n
			}
			if _, err := st.Write(data[i*chunk : end]); err != nil {
				werr <- err
				return
			}
			if afterChunk != nil {
				if err := afterChunk(i); err != nil {
					werr <- err
					return
				}
			}
		}
		werr <- nil
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(st, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if !bytes.Equal(got, data) {
		for i := range got {
			if got[i] != data[i] {
				return fmt.Errorf("echo differs from byte %d on", i)
			}
		}
	}
	return nil
}

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("url", "", "ws:// URL of the server")
	n := fs.Int("echo-bytes", 1<<20, "bytes to write and read back per stream")
	streams := fs.Int("streams", 1, "streams to echo through at once")
	switches := fs.Int("switches", 0, "WebSocket switches (same ClientID) during the first stream: "+
		"after its 64 KiB chunks 8, 24, 40, ...; the first one leaves a 300 ms gap")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after this long")
	fs.Parse(args)
	if *url == "" {
		return errors.New("-url is required")
	}
	time.AfterFunc(*timeout, func() {
		fmt.Fprintf(os.Stderr, "timeout after %v\n", *timeout)
		os.Exit(1)
	})
	start := time.Now()
	pconn, err := newRedialPacketConn(*url)
	if err != nil {
		return err
	}
	defer pconn.Close()
	conn, err := kcp.NewConn2(dummyAddr{}, nil, 0, 0, pconn)
	if err != nil {
		return err
	}
	defer conn.Close()
	tuneKCP(conn)
	sess, err := smux.Client(conn, smuxConfig(10*time.Minute))
	if err != nil {
		return err
	}
	defer sess.Close()
	done := 0
	switcher := func(i int) error {
		if done >= *switches || i != 8+16*done {
			return nil
		}
		gap := time.Duration(0)
		if done == 0 {
			gap = 300 * time.Millisecond
		}
		done++
		return pconn.switchCarrier(gap)
	}
	errs := make(chan error, *streams)
	for i := 0; i < *streams; i++ {
		var after func(int) error
		if i == 0 {
			after = switcher
		}
		go func() { errs <- echoOnce(sess, *n, after) }()
	}
	for i := 0; i < *streams; i++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	if done < *switches {
		return fmt.Errorf("only %d of %d switches happened (stream too short)", done, *switches)
	}
	fmt.Printf("OK %.3f\n", time.Since(start).Seconds())
	return nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-turbotunnel server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = runServer(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-turbotunnel:", err)
		os.Exit(1)
	}
}
