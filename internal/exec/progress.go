package exec

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// FractionScale is the total reported for fractional progress (a bare 0.25
// or JSON "progress"), so that a fraction fits the integer current/total pair
// jobs carry: 0.25 becomes 250 of 1000, fine enough for any progress bar.
const FractionScale = 1000

// ParseProgress parses one stdout line; ok=false means it is not a progress
// line and belongs to the result. A trailing "\n" or "\r\n" is ignored.
//
// Accepted forms are "progress CUR/TOTAL message", "progress CUR message"
// (total 0, unknown), a bare decimal fraction with a dot such as "0.25" or
// "1.0", optionally followed by a tab and a message, and a JSON object with a
// "progress" fraction or a "current" count (plus optional "total" and
// "message"). The dot is required so that plain numbers in a result, such as
// a line "1", are not swallowed. Negative counts, fractions outside [0, 1]
// and anything malformed are rejected rather than guessed at.
//
// Lines that cannot be progress are rejected without allocating, since every
// line of a possibly huge result passes through here.
func ParseProgress(line []byte) (current, total int64, message string, ok bool) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	const keyword = "progress"
	switch {
	case len(line) > len(keyword) && string(line[:len(keyword)]) == keyword &&
		isBlank(line[len(keyword)]):
		return parseCounter(line[len(keyword):])
	case len(line) > 0 && line[0] == '{':
		return parseJSON(line)
	default:
		return parseFraction(line)
	}
}

// parseCounter parses the " CUR[/TOTAL] [message]" after the keyword.
func parseCounter(rest []byte) (current, total int64, message string, ok bool) {
	rest = bytes.TrimLeft(rest, " \t")
	num, msg := rest, []byte(nil)
	if i := bytes.IndexAny(rest, " \t"); i >= 0 {
		num, msg = rest[:i], rest[i+1:]
	}
	cur, tot, hasTotal := bytes.Cut(num, []byte("/"))
	current, ok = parseCount(cur)
	if !ok {
		return 0, 0, "", false
	}
	if hasTotal {
		if total, ok = parseCount(tot); !ok {
			return 0, 0, "", false
		}
	}
	return current, total, string(bytes.TrimSpace(msg)), true
}

// parseCount accepts only plain decimal digits: signs, spaces and other
// bases are more likely result text than a count.
func parseCount(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// parseFraction parses "0.25" or "0.25\tmessage".
func parseFraction(line []byte) (current, total int64, message string, ok bool) {
	num, msg, _ := bytes.Cut(line, []byte("\t"))
	if !isDecimal(num) {
		return 0, 0, "", false
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		return 0, 0, "", false
	}
	current, ok = scaleFraction(f)
	if !ok {
		return 0, 0, "", false
	}
	return current, FractionScale, string(bytes.TrimSpace(msg)), true
}

// isDecimal reports whether b is digits with exactly one dot and at least one
// digit, which keeps ParseFloat away from "Inf", "NaN", exponents and hex.
func isDecimal(b []byte) bool {
	dots, digits := 0, 0
	for _, c := range b {
		switch {
		case c == '.':
			dots++
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	return dots == 1 && digits > 0
}

func scaleFraction(f float64) (int64, bool) {
	if math.IsNaN(f) || f < 0 || f > 1 {
		return 0, false
	}
	return int64(math.Round(f * FractionScale)), true
}

// parseJSON accepts {"progress": 0.5, "message": "..."} or
// {"current": 3, "total": 17, "message": "..."}; any other JSON is result data.
func parseJSON(line []byte) (current, total int64, message string, ok bool) {
	// Cheap filter first: JSON lines results are common and decoding each
	// of them would be slow.
	if !bytes.Contains(line, []byte(`"progress"`)) && !bytes.Contains(line, []byte(`"current"`)) {
		return 0, 0, "", false
	}
	var v struct {
		Progress *float64 `json:"progress"`
		Current  *int64   `json:"current"`
		Total    *int64   `json:"total"`
		Message  string   `json:"message"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return 0, 0, "", false
	}
	switch {
	case v.Progress != nil:
		current, ok = scaleFraction(*v.Progress)
		total = FractionScale
	case v.Current != nil:
		current, ok = *v.Current, *v.Current >= 0
		if v.Total != nil {
			total = *v.Total
			ok = ok && total >= 0
		}
	}
	if !ok {
		return 0, 0, "", false
	}
	return current, total, v.Message, true
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }
