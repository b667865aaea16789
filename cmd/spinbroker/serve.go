package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// serveCommand is being written together with internal/httpapi.
func (a *app) serveCommand() *cobra.Command {
	return &cobra.Command{Use: "serve", Short: "Run the broker", RunE: func(*cobra.Command, []string) error {
		return errors.New("serve: in progress")
	}}
}
