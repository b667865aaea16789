package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spinbroker "github.com/spin-broker/spinbroker"
)

// TestDB_AnswerReadAfterCommit: the enqueue and the cancel of a package
// too big to be read in their transaction (over answerInTxCommands
// commands, or answerInTxBytes of text) answer the package with all its
// commands read once the transaction has committed: while it is read, the
// writer takes other clients' writes. Read in the transaction, the answer
// of a package of 50,000 commands held every other write back for a
// second or more (BenchmarkBigPackage). The answer still shows the change.
func TestDB_AnswerReadAfterCommit(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "answer.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	enqueue := func(id string) (*spinbroker.Package, error) { return db.Enqueue(ctx, id) }
	cancel := func(id string) (*spinbroker.Package, error) { return db.CancelPackage(ctx, id) }
	large := json.RawMessage(`{"pad":"` + strings.Repeat("x", answerInTxBytes/2) + `"}`)
	for _, op := range []struct {
		name string
		do   func(id string) (*spinbroker.Package, error)
		cmds []spinbroker.NewCommand
		want spinbroker.CommandState
	}{
		{"enqueue/many", enqueue, manyCommands(answerInTxCommands + 1), spinbroker.Ready},
		{"cancel/many", cancel, manyCommands(answerInTxCommands + 1), spinbroker.Cancelled},
		{"enqueue/large", enqueue, []spinbroker.NewCommand{{Resource: "r", Action: "a", Parameters: large}, {Resource: "r", Action: "b", Parameters: large}}, spinbroker.Ready},
	} {
		t.Run(op.name, func(t *testing.T) {
			cmds := op.cmds
			p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: cmds}, nil)
			if err != nil {
				t.Fatal(err)
			}
			reading, release := make(chan struct{}), make(chan struct{})
			db.readingBack = func(id string) {
				if id == p.ID {
					close(reading)
					<-release
				}
			}
			defer func() { db.readingBack = nil }()
			type answer struct {
				p   *spinbroker.Package
				err error
			}
			answered := make(chan answer, 1)
			go func() {
				p, err := op.do(p.ID)
				answered <- answer{p, err}
			}()
			select {
			case <-reading:
			case a := <-answered:
				t.Fatalf("answered without reading the package back: %+v", a)
			}
			small := make(chan error, 1)
			go func() {
				_, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: []spinbroker.NewCommand{{Resource: "small", Action: "a"}}}, nil)
				small <- err
			}()
			select {
			case err := <-small:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				close(release)
				<-answered
				<-small
				t.Fatalf("a create waited for the %s's answer to be read back: the read holds the writer", op.name)
			}
			close(release)
			a := <-answered
			if a.err != nil {
				t.Fatal(a.err)
			}
			if len(a.p.Commands) != len(cmds) {
				t.Fatalf("the answer holds %d commands, want %d", len(a.p.Commands), len(cmds))
			}
			for _, c := range a.p.Commands {
				if c.State != op.want {
					t.Errorf("command %s is %s in the answer, want %s", c.ID, c.State, op.want)
				}
			}
			var counts spinbroker.Counts
			counts.Add(op.want, len(cmds))
			if a.p.Counts != counts {
				t.Errorf("the answer counts %+v, want %+v", a.p.Counts, counts)
			}
		})
	}
}

// TestDB_AnswerOfPackageDeletedMeanwhile: a package deleted between the
// commit of its cancel and the read of the answer after it is answered
// 404, saying that the cancel was made.
func TestDB_AnswerOfPackageDeletedMeanwhile(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "deleted.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Enqueue: true, Commands: manyCommands(answerInTxCommands + 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reading, release := make(chan struct{}), make(chan struct{})
	db.readingBack = func(string) { close(reading); <-release }
	done := make(chan error, 1)
	go func() {
		_, err := db.CancelPackage(ctx, p.ID)
		done <- err
	}()
	<-reading
	deleted := make(chan error, 1)
	go func() { deleted <- db.DeletePackage(ctx, p.ID) }()
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatalf("delete the cancelled package: %v", err)
		}
	case <-time.After(20 * time.Second):
		close(release)
		<-done
		<-deleted
		t.Fatal("the delete waited for the cancel's answer to be read back: the read holds the writer")
	}
	close(release)
	err = <-done
	if spinbroker.ErrorCode(err) != spinbroker.ENOTFOUND || !strings.Contains(err.Error(), "after this cancel committed") {
		t.Fatalf("got %v, want not_found saying the package was deleted after the cancel committed", err)
	}
}

// manyCommands is n commands without dependencies on two resources.
func manyCommands(n int) []spinbroker.NewCommand {
	cmds := make([]spinbroker.NewCommand, n)
	for i := range cmds {
		cmds[i] = spinbroker.NewCommand{Resource: fmt.Sprint("r", i%2), Action: "a", Parameters: json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)}
	}
	return cmds
}

// TestDB_SmallAnswerInTx: a package within answerInTxCommands commands
// and answerInTxBytes of text is read in the enqueue's own transaction:
// the hook of the read after the commit is never called.
func TestDB_SmallAnswerInTx(t *testing.T) {
	db := openQuiet(t, filepath.Join(t.TempDir(), "small.db"), Options{})
	defer db.Close()
	ctx := context.Background()
	db.readingBack = func(id string) { t.Errorf("package %s was read after the commit", id) }
	p, _, err := db.CreatePackage(ctx, spinbroker.NewPackage{Commands: manyCommands(answerInTxCommands)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Enqueue(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Commands) != answerInTxCommands || got.Counts.Ready != answerInTxCommands {
		t.Fatalf("the answer holds %d commands, %d ready, want %d of each", len(got.Commands), got.Counts.Ready, answerInTxCommands)
	}
	if got, err = db.CancelPackage(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if got.Counts.Cancelled != answerInTxCommands {
		t.Fatalf("the answer counts %d cancelled, want %d", got.Counts.Cancelled, answerInTxCommands)
	}
}
