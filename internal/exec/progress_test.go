package exec

import (
	"bytes"
	"testing"
)

func TestParseProgress(t *testing.T) {
	tests := []struct {
		line     string
		cur, tot int64
		msg      string
		ok       bool
	}{
		{line: "progress 3/17 page 3", cur: 3, tot: 17, msg: "page 3", ok: true},
		{line: "progress 3/17 page 3\n", cur: 3, tot: 17, msg: "page 3", ok: true},
		{line: "progress 3/17 page 3\r\n", cur: 3, tot: 17, msg: "page 3", ok: true},
		{line: "progress 5", cur: 5, ok: true},
		{line: "progress\t5/10\t  spaced  ", cur: 5, tot: 10, msg: "spaced", ok: true},
		{line: "progress 0/0", ok: true},
		{line: "0.25", cur: 250, tot: 1000, ok: true},
		{line: "0.25\tresizing", cur: 250, tot: 1000, msg: "resizing", ok: true},
		{line: "1.0", cur: 1000, tot: 1000, ok: true},
		{line: ".5", cur: 500, tot: 1000, ok: true},
		{line: "0.", cur: 0, tot: 1000, ok: true},
		{line: "0.0004", cur: 0, tot: 1000, ok: true},
		{line: `{"progress": 0.5, "message": "half"}`, cur: 500, tot: 1000, msg: "half", ok: true},
		{line: `{"current":3,"total":17,"message":"page 3"}`, cur: 3, tot: 17, msg: "page 3", ok: true},
		{line: `{"current":3}`, cur: 3, ok: true},

		{line: ""},
		{line: "progress"},
		{line: "progress "},
		{line: "progressive 3/4"},
		{line: "progress -1/4"},
		{line: "progress 1/-4"},
		{line: "progress +1/4"},
		{line: "progress 1/"},
		{line: "progress /4"},
		{line: "progress 1/2/3"},
		{line: "progress x"},
		{line: "progress 99999999999999999999"},
		{line: "Progress 1/2"},
		{line: "1"},
		{line: "0"},
		{line: "1.5"},
		{line: "-0.5"},
		{line: "NaN"},
		{line: "Inf"},
		{line: "+Inf"},
		{line: "1e-1"},
		{line: "0x1p-2"},
		{line: "."},
		{line: "0.5.1"},
		{line: "0.25 message"},
		{line: " 0.25"},
		{line: "hello"},
		{line: `{"a":1}`},
		{line: `{"progress": 1.5}`},
		{line: `{"progress": -0.1}`},
		{line: `{"progress": "half"}`},
		{line: `{"current": -3}`},
		{line: `{"current": 3, "total": -1}`},
		{line: `{"current": 1.5}`},
		{line: `{"current": 3, "message": 7}`},
		{line: `{"progress": 0.5`},
		{line: `{"name": "progress"}`},
		{line: `["progress", 0.5]`},
	}
	for _, tt := range tests {
		cur, tot, msg, ok := ParseProgress([]byte(tt.line))
		if ok != tt.ok || cur != tt.cur || tot != tt.tot || msg != tt.msg {
			t.Errorf("ParseProgress(%q) = %d, %d, %q, %v; want %d, %d, %q, %v",
				tt.line, cur, tot, msg, ok, tt.cur, tt.tot, tt.msg, tt.ok)
		}
	}
}

func TestParseProgressDoesNotAllocateForData(t *testing.T) {
	lines := [][]byte{
		[]byte("plain result text\n"),
		[]byte("12345 numbers\n"),
		[]byte(`{"id": 1, "name": "row"}` + "\n"),
		bytes.Repeat([]byte("x"), 1000),
	}
	for _, line := range lines {
		if n := testing.AllocsPerRun(100, func() { ParseProgress(line) }); n != 0 {
			t.Errorf("ParseProgress(%.20q...) allocates %v times", line, n)
		}
	}
}

func FuzzParseProgress(f *testing.F) {
	for _, s := range []string{
		"progress 3/17 page 3", "progress 5", "0.25", "0.25\tmsg", "1.0",
		`{"progress": 0.5, "message": "m"}`, `{"current":3,"total":17}`,
		"NaN", "-1", "progress -1/2", "", "\n", "progress 1/\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cur, tot, msg, ok := ParseProgress(line)
		if !ok {
			if cur != 0 || tot != 0 || msg != "" {
				t.Fatalf("not ok but returned %d, %d, %q", cur, tot, msg)
			}
			return
		}
		if cur < 0 || tot < 0 {
			t.Fatalf("ParseProgress(%q) = %d, %d: negative", line, cur, tot)
		}
		// A line parses the same whether or not its newline is still on.
		if bytes.IndexByte(line, '\n') < 0 {
			c2, t2, m2, ok2 := ParseProgress(append(line[:len(line):len(line)], '\n'))
			if c2 != cur || t2 != tot || m2 != msg || !ok2 {
				t.Fatalf("ParseProgress(%q) differs with a trailing newline", line)
			}
		}
	})
}
