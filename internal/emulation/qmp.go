//go:build unix

package emulation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMP is a connection to a QEMU Machine Protocol monitor. It speaks the
// protocol itself rather than through go-qemu's qmp package, whose monitor
// has no timeouts and which would link libvirt's RPC client for nothing.
//
// A QMP is used by one goroutine at a time; its methods serialize anyway.
type QMP struct {
	conn    net.Conn
	r       *bufio.Reader
	mu      sync.Mutex
	nextID  int
	timeout time.Duration
	// Version is the QEMU version from the greeting ("7.2.0").
	Version string
}

// QMPError is an error answered by QEMU to a command.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// Error implements the error interface.
func (e *QMPError) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

// DialQMP connects to the QMP unix socket at path, reads the greeting and
// negotiates capabilities. Every exchange, this one included, is bounded by
// timeout and by ctx.
func DialQMP(ctx context.Context, path string, timeout time.Duration) (*QMP, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect: %w", err)
	}
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), timeout: timeout}
	stop := q.watch(ctx)
	defer stop()
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := q.deadline(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	line, err := q.readLine()
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	if err == nil && greeting.QMP == nil {
		err = errors.New("the greeting is not QMP's")
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: greeting: %w", q.ctxErr(ctx, err))
	}
	v := greeting.QMP.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if err := q.exchange(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// QMPPeer is the process id of what listens on the QMP unix socket at path
// (a QEMU), or 0 when nothing does (no socket, or one left by a QEMU that
// ended) or its pid cannot be told. It only connects: it reads no
// greeting, so a QEMU that is stopped (SIGSTOP) or busy is found too.
func QMPPeer(ctx context.Context, path string, timeout time.Duration) int {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0
	}
	return peerPID(uc)
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs command with args (nil for none) and decodes its "return"
// into out (nil to ignore it). Events met on the way are skipped.
func (q *QMP) Execute(ctx context.Context, command string, args, out any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.watch(ctx)
	defer stop()
	return q.exchange(ctx, command, args, out)
}

// watch closes the deadline early when ctx ends, so a blocked read returns.
func (q *QMP) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Now()) })
}

func (q *QMP) deadline(ctx context.Context) error {
	dl := time.Now().Add(q.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return q.conn.SetDeadline(dl)
}

func (q *QMP) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// The connection's deadline may fire a moment before ctx's own.
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("no answer within %s", q.timeout)
	}
	return err
}

func (q *QMP) exchange(ctx context.Context, command string, args, out any) error {
	if err := q.deadline(ctx); err != nil {
		return err
	}
	q.nextID++
	id := "spin-" + strconv.Itoa(q.nextID)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp: %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp: %s: %w", command, q.ctxErr(ctx, err))
	}
	for {
		line, err := q.readLine()
		if err != nil {
			return fmt.Errorf("qmp: %s: %w", command, q.ctxErr(ctx, err))
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
			Event  string          `json:"event"`
			ID     any             `json:"id"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("qmp: %s: bad answer: %w", command, err)
		}
		if resp.Event != "" || resp.ID != id {
			continue // an event, or the late answer to an abandoned command
		}
		if resp.Error != nil {
			return resp.Error
		}
		if out != nil && len(resp.Return) > 0 {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("qmp: %s: decode the answer: %w", command, err)
			}
		}
		return nil
	}
}

// maxLine bounds one QMP message, so a broken peer cannot exhaust memory.
const maxLine = 1 << 20

func (q *QMP) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := q.r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, errors.New("message too long")
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// Status is the answer of query-status.
type Status struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus asks QEMU for the VM's run state.
func (q *QMP) QueryStatus(ctx context.Context) (*Status, error) {
	var s Status
	if err := q.Execute(ctx, "query-status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// PowerDown presses the VM's ACPI power button; the guest decides.
func (q *QMP) PowerDown(ctx context.Context) error {
	return q.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit ends QEMU at once.
func (q *QMP) Quit(ctx context.Context) error {
	return q.Execute(ctx, "quit", nil, nil)
}
