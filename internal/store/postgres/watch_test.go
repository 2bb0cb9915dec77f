package postgres

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

func TestDecode(t *testing.T) {
	s := &Store{origin: "SELF"}
	tests := []struct {
		name    string
		payload string
		want    []store.Change
		wantErr string
	}{
		{
			name:    "columns",
			payload: `{"o":"OTHER","j":["a","b"],"q":["q","r"],"w":["","alice"],"v":[1,7],"s":["queued","succeeded"],"d":[false,true]}`,
			want: []store.Change{
				{JobID: "a", Queue: "q", Version: 1, State: job.Queued},
				{JobID: "b", Queue: "r", Owner: "alice", Version: 7, State: job.Succeeded, Deleted: true},
			},
		},
		{
			name:    "entries of the earlier form",
			payload: `{"o":"OTHER","c":[["a","q","",1,"queued"],["b","r","alice",7,"succeeded",true]]}`,
			want: []store.Change{
				{JobID: "a", Queue: "q", Version: 1, State: job.Queued},
				{JobID: "b", Queue: "r", Owner: "alice", Version: 7, State: job.Succeeded, Deleted: true},
			},
		},
		{name: "own, by its head", payload: `{"o":"SELF","j":`},
		{name: "own, decoded", payload: `{ "o":"SELF","j":["a"],"q":["q"],"w":[""],"v":[1],"s":["queued"],"d":[false]}`},
		{name: "columns of different lengths", payload: `{"o":"OTHER","j":["a","b"],"q":["q"],"w":["",""],"v":[1,2],"s":["queued","queued"],"d":[false,false]}`, wantErr: "different lengths"},
		{name: "short entry", payload: `{"o":"OTHER","c":[["a","q"]]}`, wantErr: "2 fields"},
		{name: "not JSON", payload: `{"o":"OTHER",`, wantErr: "payload"},
		{name: "wrong type", payload: `{"o":"OTHER","j":[1],"q":["q"],"w":[""],"v":[1],"s":["queued"],"d":[false]}`, wantErr: "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.decode(tt.payload)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decode: %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decode:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzDecode: whatever a notification holds, decode returns changes or an
// error and never panics; changes come only from a payload that parses.
func FuzzDecode(f *testing.F) {
	f.Add(`{"o":"OTHER","j":["a"],"q":["q"],"w":[""],"v":[1],"s":["queued"],"d":[false]}`)
	f.Add(`{"o":"OTHER","c":[["a","q","",1,"queued",true]]}`)
	f.Add(`{"o":"SELF","j":[]}`)
	f.Add(`{"o":"OTHER","j":["a"],"q":[],"w":[],"v":[],"s":[],"d":[]}`)
	s := &Store{origin: "SELF"}
	f.Fuzz(func(t *testing.T, payload string) {
		changes, err := s.decode(payload)
		if err == nil && len(changes) > 0 && !json.Valid([]byte(payload)) {
			t.Errorf("decode of invalid JSON %q gave %v", payload, changes)
		}
	})
}
