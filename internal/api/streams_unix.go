//go:build unix

package api

import "syscall"

// haveRawIO says that writeNow and clientGone can use a socket's
// descriptor without waiting on it.
const haveRawIO = true

// rawWrite writes as much of b as the socket takes without waiting.
func rawWrite(raw syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				werr = err
				break
			}
			if m == 0 {
				werr = syscall.EAGAIN
				break
			}
		}
		return true // done, whatever happened: never wait here
	})
	if err != nil {
		return n, err
	}
	if werr == syscall.EAGAIN || werr == syscall.EWOULDBLOCK {
		return n, errWouldBlock
	}
	return n, werr
}

// rawGone reads what the client sent, without waiting, and reports
// whether it closed its side (or the connection failed).
func rawGone(raw syscall.RawConn) bool {
	var buf [512]byte
	gone := false
	err := raw.Read(func(fd uintptr) bool {
		// A bounded drain: a client that sends on and on is not worth
		// more of a loop's time.
		for range 16 {
			n, err := syscall.Read(int(fd), buf[:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
				return true
			case err != nil || n == 0:
				gone = true
				return true
			}
		}
		return true
	})
	return gone || err != nil
}
