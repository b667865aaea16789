package brokertest_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/brokertest"
	"github.com/spin-broker/spinbroker/internal/httpapi"
)

func TestStart(t *testing.T) {
	ctx := context.Background()
	t.Run("WallClock", func(t *testing.T) {
		b := brokertest.Start(t)
		before := time.Now().Add(-time.Second)
		p, err := b.Client.CreatePackage(ctx, spinbroker.NewPackage{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Clock != nil || p.CreatedAt.Before(before) {
			t.Errorf("clock %v, package created at %v, before %v", b.Clock, p.CreatedAt, before)
		}
		if got, err := b.DB.Package(ctx, p.ID); err != nil || got.ID != p.ID {
			t.Errorf("the store does not hold the package the client made: %v, %v", got, err)
		}
	})
	t.Run("WithClock", func(t *testing.T) {
		b := brokertest.Start(t, brokertest.WithClock())
		b.Clock.Add(time.Hour)
		p, err := b.Client.CreatePackage(ctx, spinbroker.NewPackage{})
		if err != nil {
			t.Fatal(err)
		}
		if !p.CreatedAt.Equal(b.Clock.Now()) {
			t.Errorf("package created at %v, the test's clock says %v", p.CreatedAt, b.Clock.Now())
		}
	})
	t.Run("WithFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "here.db")
		brokertest.Start(t, brokertest.WithFile(path))
		if _, err := os.Stat(path); err != nil {
			t.Errorf("no database at the path given: %v", err)
		}
	})
	t.Run("WithAPIAndWrap", func(t *testing.T) {
		var seen atomic.Int32
		b := brokertest.Start(t, brokertest.WithAPI(httpapi.Options{Auth: true}), brokertest.Wrap(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Add(1)
				h.ServeHTTP(w, r)
			})
		}))
		if _, err := b.Client.Queues(ctx); spinbroker.ErrorCode(err) != spinbroker.EUNAUTHORIZED {
			t.Errorf("queues without a token, with auth on: %v", err)
		}
		if seen.Load() != 1 {
			t.Errorf("the wrapping handler saw %d requests, want 1", seen.Load())
		}
	})
}
