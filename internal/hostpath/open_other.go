//go:build !unix

package hostpath

import "os"

// openFlags are none where the system has no FIFOs to block an open.
const openFlags = 0

// folderFlags are none either: a folder is opened as any file is.
const folderFlags = 0

// setBlocking has nothing to clear.
func setBlocking(*os.File) error { return nil }

// openRoot opens the root folder dir.
func openRoot(dir string) (*os.Root, error) { return os.OpenRoot(dir) }
