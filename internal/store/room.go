package store

import (
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// roomAfterFull is how much free space the database's file system must
// have again before writes that failed for a full disk count as working:
// the largest request body a write may carry.
const roomAfterFull = 1 << 20

// diskFull reports whether err is SQLite's "database or disk is full".
func diskFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL
}

// stillFull reports whether a recorded write failure is a full disk that
// has no room yet. On a full disk a small write can still commit, into WAL
// space that a larger write that failed allocated (a heartbeat, a queue
// setting, WriteFailure's probe), while every create fails: such a commit
// says nothing of the disk, and clearing the failure on it turned /healthz
// and spinbroker_store_writes_failing back to "ok" between two failed
// creates. Where free space cannot be read, a commit clears it as before.
func (db *DB) stillFull(failure error) bool {
	if !diskFull(failure) {
		return false
	}
	_, full := NoRoom(db.path)
	return full
}

// NoRoom reports whether the file system of the file at path has less free
// space than a write may need (roomAfterFull), and how much it has. Where
// free space cannot be read, it reports false.
func NoRoom(path string) (free uint64, full bool) {
	free, ok := freeBytes(path)
	return free, ok && free < roomAfterFull
}
