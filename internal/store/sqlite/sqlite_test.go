package sqlite_test

import (
	"context"
	"testing"

	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/sqlite"
	"github.com/docket/docket/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		st, err := sqlite.Open(context.Background(), sqlite.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}
