package pdfapp

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFindTools(t *testing.T) {
	tools := needTools(t)
	for _, tool := range []Tool{tools.PDFInfo, tools.PDFToPPM, tools.Tesseract} {
		if !filepath.IsAbs(tool.Path) || tool.Version == "" || tool.Version[0] < '0' || tool.Version[0] > '9' {
			t.Errorf("%s: %+v", tool.Name, tool)
		}
	}
	if !slices.Contains(tools.Languages, "eng") {
		t.Errorf("languages %v", tools.Languages)
	}
}

// What is missing is named, with the packages that provide it.
func TestFindToolsNamesWhatIsMissing(t *testing.T) {
	real := needTools(t)
	link := func(dir string, tools ...Tool) {
		for _, tool := range tools {
			if err := os.Symlink(tool.Path, filepath.Join(dir, tool.Name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A tesseract without English data.
	noEng := func(dir string) {
		script := "#!/bin/sh\ncase \"$1\" in\n--list-langs) printf 'List of available languages in \"/x/\" (1):\\nosd\\n';;\n*) echo 'tesseract 5.3.0';;\nesac\n"
		if err := os.WriteFile(filepath.Join(dir, "tesseract"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		setup    func(dir string)
		missing  []string
		packages []string
	}{
		{"nothing", func(string) {}, []string{"pdfinfo", "pdftoppm", "tesseract"}, []string{PackagePoppler, PackageTesseract, PackageTesseractEng}},
		{"poppler only", func(dir string) { link(dir, real.PDFInfo, real.PDFToPPM) }, []string{"tesseract"}, []string{PackageTesseract, PackageTesseractEng}},
		{"no pdftoppm", func(dir string) { link(dir, real.PDFInfo, real.Tesseract) }, []string{"pdftoppm"}, []string{PackagePoppler}},
		{"no English", func(dir string) { link(dir, real.PDFInfo, real.PDFToPPM); noEng(dir) }, []string{"tesseract language eng"}, []string{PackageTesseractEng}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(dir)
			t.Setenv("PATH", dir)
			_, err := FindTools(t.Context())
			var me *MissingToolsError
			if !errors.As(err, &me) {
				t.Fatalf("error %v, want a MissingToolsError", err)
			}
			if !slices.Equal(me.Missing, c.missing) || !slices.Equal(me.Packages, c.packages) {
				t.Errorf("missing %q, packages %q; want %q, %q", me.Missing, me.Packages, c.missing, c.packages)
			}
			if want := "apt-get install -y " + strings.Join(c.packages, " "); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	cases := []struct{ out, want string }{
		{"pdftoppm version 22.12.0\nCopyright 2005-2022 The Poppler Developers", "22.12.0"},
		{"tesseract 5.3.0\n leptonica-1.82.0\n", "5.3.0"},
		{"tesseract v5.4.0.20240606\n", "5.4.0.20240606"},
		{"something else\n", "something else"},
		{"", ""},
	}
	for _, c := range cases {
		if got := parseVersion(c.out); got != c.want {
			t.Errorf("parseVersion(%q) = %q, want %q", c.out, got, c.want)
		}
	}
}
