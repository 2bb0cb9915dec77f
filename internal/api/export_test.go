package api

import "time"

// StreamTimings are the intervals of a Server's taken-over streams; zero
// fields keep theirs.
type StreamTimings struct {
	Heartbeat, Recheck, Stall, Probe, Sweep time.Duration
}

// SetStreamTimings sets them, before s serves a stream.
func SetStreamTimings(s *Server, t StreamTimings) {
	ss := s.streamServer()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, f := range []struct {
		to   *time.Duration
		from time.Duration
	}{{&ss.t.heartbeat, t.Heartbeat}, {&ss.t.recheck, t.Recheck}, {&ss.t.stall, t.Stall}, {&ss.t.probe, t.Probe}, {&ss.t.sweep, t.Sweep}} {
		if f.from > 0 {
			*f.to = f.from
		}
	}
}

// OpenStreams reports how many streams s has taken over and not yet ended.
func OpenStreams(s *Server) int { return s.streamServer().open() }

// StalledStreams reports how many of them wait for a client that does not
// read.
func StalledStreams(s *Server) int { return int(s.streamServer().stalled.Load()) }
