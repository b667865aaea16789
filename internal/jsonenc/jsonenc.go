// Package jsonenc encodes the broker's answers exactly as encoding/json
// does, but copies the parameters and outputs of commands into them
// instead of running encoding/json's validator over them once more.
//
// encoding/json compacts and validates a json.RawMessage every time it
// encodes one, a byte at a time through its scanner (about 5 ns a byte
// here). A command's parameters (up to 1 MiB) and output were validated
// and compacted once, when they came in (spinbroker.CheckOutput and a new
// command's validation), and the store gives back those bytes; yet each
// answer that carries the command (its create, next, claim, complete, a
// GET) scanned them again. For 64 KiB parameters that was 40% of the
// broker's CPU. Here the rest of the command is encoded by encoding/json,
// with the two raw fields left null, and the stored bytes take the nulls'
// places; HTML-escaped as encoding/json escapes them, so that the answer
// is the same to the byte (FuzzCommand holds it to that).
//
// The stored bytes are trusted to be compact, valid JSON: only the broker
// writes them, after checking them.
package jsonenc

import (
	"bytes"
	"encoding/json"
	"sync"

	spinbroker "github.com/spin-broker/spinbroker"
)

// Append appends v's JSON encoding to dst as json.Marshal would. Commands,
// packages and claims carrying commands take the fast path; anything else
// is json.Marshal's.
func Append(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case *spinbroker.Command:
		if v != nil {
			return appendCommand(dst, v)
		}
	case spinbroker.Command:
		return appendCommand(dst, &v)
	case *spinbroker.Package:
		if v != nil {
			return appendPackage(dst, v)
		}
	case spinbroker.Package:
		return appendPackage(dst, &v)
	case *spinbroker.ClaimResult:
		if v != nil {
			return appendClaim(dst, v)
		}
	case spinbroker.ClaimResult:
		return appendClaim(dst, &v)
	}
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

var (
	paramsNull = []byte(`"parameters":null`)
	outputNull = []byte(`"output":null`)
)

func appendCommand(dst []byte, c *spinbroker.Command) ([]byte, error) {
	params, output := c.Parameters, c.Output
	if !trusted(params) || !trusted(output) {
		// Not what the store gives back: let encoding/json judge it.
		b, err := json.Marshal(c)
		return append(dst, b...), err
	}
	s := scratchPool.Get().(*scratch)
	defer s.put()
	s.bare = *c
	s.bare.Parameters, s.bare.Output = nil, nil
	if err := s.enc.Encode(&s.bare); err != nil {
		return dst, err
	}
	b := s.buf.Bytes()
	b = b[:len(b)-1] // the encoder's newline
	// The first "parameters":null and "output":null are the fields: the
	// only other text in b is in strings, where every quote is escaped,
	// and none of Command's fields is a map, whose keys could hold them.
	// Both are found before either is replaced, since the replacement may
	// hold the other's words.
	p, o := bytes.Index(b, paramsNull), bytes.Index(b, outputNull)
	if p < 0 || o < 0 || o < p {
		b, err := json.Marshal(c)
		return append(dst, b...), err
	}
	dst = append(dst, b[:p+len(paramsNull)-len("null")]...)
	dst = appendRaw(dst, params)
	dst = append(dst, b[p+len(paramsNull):o+len(outputNull)-len("null")]...)
	dst = appendRaw(dst, output)
	return append(dst, b[o+len(outputNull):]...), nil
}

// scratch is where appendCommand encodes a command without its raw
// fields: pooled, so that an answer of small commands allocates no more
// than json.Encoder did.
type scratch struct {
	buf  bytes.Buffer
	enc  *json.Encoder // writes to buf; escapes HTML, as json.Marshal does
	bare spinbroker.Command
}

var scratchPool = sync.Pool{New: func() any {
	s := new(scratch)
	s.enc = json.NewEncoder(&s.buf)
	return s
}}

func (s *scratch) put() {
	s.bare = spinbroker.Command{} // holds nothing of the answer
	s.buf.Reset()
	if s.buf.Cap() > 64<<10 {
		return // grown by an outsized command: let it go
	}
	scratchPool.Put(s)
}

// trusted reports whether raw can be copied as it is: absent, or a JSON
// object as the store keeps them (an empty, non-nil one is not: encoding/json
// refuses it).
func trusted(raw json.RawMessage) bool {
	return raw == nil || (len(raw) >= 2 && raw[0] == '{' && raw[len(raw)-1] == '}')
}

// appendRaw appends compact JSON as encoding/json would after compacting
// it: null when absent, and <, >, &, U+2028 and U+2029 escaped.
func appendRaw(dst []byte, raw json.RawMessage) []byte {
	if raw == nil {
		return append(dst, "null"...)
	}
	start := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '<' || c == '>' || c == '&':
			dst = append(dst, raw[start:i]...)
			dst = append(dst, `\u00`...)
			dst = append(dst, hex[c>>4], hex[c&0xF])
			i++
			start = i
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && raw[i+2]&^1 == 0xA8:
			// U+2028 or U+2029, which encoding/json escapes for JSONP.
			dst = append(dst, raw[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hex[raw[i+2]&0xF])
			i += 3
			start = i
		default:
			i++
		}
	}
	return append(dst, raw[start:]...)
}

const hex = "0123456789abcdef"

func appendPackage(dst []byte, p *spinbroker.Package) ([]byte, error) {
	bare := *p
	bare.Commands = nil // omitted (omitzero): the object ends where they go
	b, err := json.Marshal(&bare)
	if err != nil || p.Commands == nil {
		return append(dst, b...), err
	}
	dst = append(dst, b[:len(b)-1]...)
	dst = append(dst, `,"commands":`...)
	if dst, err = appendCommands(dst, p.Commands); err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

func appendClaim(dst []byte, c *spinbroker.ClaimResult) ([]byte, error) {
	dst = append(dst, `{"commands":`...)
	if c.Commands == nil {
		return append(dst, "null}"...), nil
	}
	dst, err := appendCommands(dst, c.Commands)
	return append(dst, '}'), err
}

func appendCommands(dst []byte, cmds []spinbroker.Command) ([]byte, error) {
	dst = append(dst, '[')
	for i := range cmds {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendCommand(dst, &cmds[i]); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}
