package httpapi

import (
	"fmt"
	"strings"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
)

// benchBatch is a batched completion of n results, as an agent sends it.
func benchBatch(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"results": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `{"id": "0190c3a4-5a6b-7c8d-9e0f-%012x", "lease": "c2b1e6f0a4d94b0f8e7c6d5b4a3f2e1d%04x", "status": true}`, i, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// benchPackage is a POST /packages body of n commands in a chain, each with
// parameters, as a client builds a package.
func benchPackage(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"id": "0190c3a4-5a6b-7c8d-9e0f-a1b2c3d4e5f6", "commands": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		deps := ""
		if i > 0 {
			deps = fmt.Sprintf(`, "dependencies": ["step-%d"]`, i-1)
		}
		fmt.Fprintf(&b, `{"key": "step-%d", "resource": "storage", "action": "create_volume", "parameters": {"Name": "vol-%d", "SizeGiB": 20, "Tags": {"team": "infra", "env": "prod"}, "Mounts": [{"path": "/data", "ro": false}]}, "max_attempts": 5, "lease_duration": "2m"%s}`, i, i, deps)
	}
	b.WriteString(`], "enqueue": true}`)
	return []byte(b.String())
}

// BenchmarkDecodeJSON measures decodeJSON on the two bodies the broker
// decodes most: an agent's batched completion and a client's package.
func BenchmarkDecodeJSON(b *testing.B) {
	for _, bb := range []struct {
		name string
		body []byte
		new  func() any
	}{
		{"BatchComplete100", benchBatch(100), func() any { return new(spinbroker.BatchComplete) }},
		{"NewPackage10", benchPackage(10), func() any { return new(spinbroker.NewPackage) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			if err := decodeJSON(bb.body, bb.new(), false); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeJSON(bb.body, bb.new(), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
