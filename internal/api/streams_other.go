//go:build !unix

package api

import "syscall"

// haveRawIO says that writeNow and clientGone can use a socket's
// descriptor without waiting on it: not on this system, where they fall
// back on write deadlines and failed heartbeats.
const haveRawIO = false

func rawWrite(raw syscall.RawConn, b []byte) (int, error) { panic("api: no raw writes here") }

func rawGone(raw syscall.RawConn) bool { return false }
