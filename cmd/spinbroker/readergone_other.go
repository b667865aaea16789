//go:build !unix

package main

import (
	"context"
	"io"
)

// readerGone is never closed here: the pipe's reader going is learnt when
// the process next writes, as before.
func readerGone(context.Context, io.Writer) <-chan struct{} { return make(chan struct{}) }
