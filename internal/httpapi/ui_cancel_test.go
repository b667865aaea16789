package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	spinbroker "github.com/spin-broker/spinbroker"
	"github.com/spin-broker/spinbroker/internal/httpapi"
	"github.com/spin-broker/spinbroker/internal/store"
	"github.com/spin-broker/spinbroker/internal/store/storetest"
)

// answerless is the real store, whose CancelPackage (which reads the whole
// package back for its answer) the test must not see called.
type answerless struct {
	httpapi.Store
	t testing.TB
}

func (a answerless) CancelPackage(ctx context.Context, id string) (*spinbroker.Package, error) {
	a.t.Errorf("the dashboard's cancel read package %s back, and shows nothing of it", id)
	return a.Store.CancelPackage(ctx, id)
}

// TestUI_CancelReadsNoPackage: the dashboard's cancel button cancels the
// package without reading it back: it sends the browser to the package's
// page, which reads one page of it, and the read of all of it (50,000
// commands, their parameters and outputs) was thrown away.
func TestUI_CancelReadsNoPackage(t *testing.T) {
	db, _ := storetest.MustOpen(t, store.Options{})
	api := httpapi.New(answerless{db, t}, slog.New(slog.DiscardHandler), httpapi.Options{})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() { api.Shutdown(); srv.Close() })
	e := &env{t: t, db: db, api: api, srv: srv}
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: []spinbroker.NewCommand{{Resource: "r", Action: "a"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := e.form("/ui/packages/"+p.ID+"/cancel", url.Values{"confirmed": {"yes"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/packages/"+p.ID {
		t.Fatalf("%d to %q, want 303 to the package: %s", r.status, r.header.Get("Location"), r.body)
	}
	if got, err := db.PackageInfo(ctx, p.ID); err != nil || got.State != spinbroker.PackageCancelled {
		t.Fatalf("the package is %+v after the cancel (%v), want cancelled", got, err)
	}
	r = e.form("/ui/packages/"+fixedID(98)+"/cancel", url.Values{"confirmed": {"yes"}})
	if r.status != http.StatusNotFound {
		t.Errorf("the cancel of a missing package answered %d, want 404", r.status)
	}
}
