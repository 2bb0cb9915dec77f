package web

import (
	"io/fs"
	"regexp"
	"testing"
)

// TestNoExternalReferences keeps the dashboard self-contained: no file
// loads anything from another origin (no CDN, no web font).
func TestNoExternalReferences(t *testing.T) {
	ext := regexp.MustCompile(`(?i)(?:src|href)\s*=\s*["']?(?:https?:)?//|@import|url\(\s*["']?(?:https?:)?//|import\s*\(?\s*["'](?:https?:)?//`)
	err := fs.WalkDir(static, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		if m := ext.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
