package pdfapp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	osexec "os/exec"
	"slices"
	"strings"
	"time"
)

// Tool is one program the app runs.
type Tool struct {
	// Name is the program's name, as looked up in $PATH.
	Name string
	// Path is where it was found.
	Path string
	// Version is what the program says of itself, e.g. "22.12.0".
	Version string
}

// String gives "path (version)", for logs.
func (t Tool) String() string {
	if t.Version == "" {
		return t.Path
	}
	return t.Path + " (" + t.Version + ")"
}

// Tools are the programs the PDF queues run: pdfinfo and pdftoppm from
// poppler-utils, tesseract from tesseract-ocr with its English data.
type Tools struct {
	PDFInfo   Tool
	PDFToPPM  Tool
	Tesseract Tool
	// Languages are the OCR languages tesseract has data for.
	Languages []string
}

// The Debian packages that provide the tools.
const (
	PackagePoppler      = "poppler-utils"
	PackageTesseract    = "tesseract-ocr"
	PackageTesseractEng = "tesseract-ocr-eng"
)

// MissingToolsError says which programs (or tesseract languages) the PDF
// queues need and could not find, and which Debian packages provide them.
type MissingToolsError struct {
	// Missing names the programs not found, and "tesseract language eng"
	// when tesseract lacks its English data.
	Missing []string
	// Packages are the Debian packages to install.
	Packages []string
	// Err is what went wrong looking, when something did beyond absence.
	Err error
}

// Error names what is missing and gives the command that installs it.
func (e *MissingToolsError) Error() string {
	s := "PDF tools missing: " + strings.Join(e.Missing, ", ")
	if e.Err != nil {
		s += " (" + e.Err.Error() + ")"
	}
	return s + "; the PDF queues cannot run without them. On Debian or Ubuntu: apt-get install -y " + strings.Join(e.Packages, " ")
}

// Unwrap returns what went wrong looking, if anything did.
func (e *MissingToolsError) Unwrap() error { return e.Err }

// requiredLanguage is the OCR language the app reads documents in.
const requiredLanguage = "eng"

// toolProbeTimeout bounds each version or language query: a program that
// hangs at start must not hang docket's start with it.
const toolProbeTimeout = 10 * time.Second

// FindTools looks up pdfinfo, pdftoppm and tesseract in $PATH, asks each
// for its version and tesseract for its languages. It returns a
// *MissingToolsError naming what is missing (a program, or tesseract's
// English data) and the Debian packages to install.
func FindTools(ctx context.Context) (Tools, error) {
	var t Tools
	missing := &MissingToolsError{}
	need := func(pkg string) {
		if !slices.Contains(missing.Packages, pkg) {
			missing.Packages = append(missing.Packages, pkg)
		}
	}
	for _, x := range []struct {
		dst  *Tool
		name string
		pkg  string
	}{
		{&t.PDFInfo, "pdfinfo", PackagePoppler},
		{&t.PDFToPPM, "pdftoppm", PackagePoppler},
		{&t.Tesseract, "tesseract", PackageTesseract},
	} {
		path, err := osexec.LookPath(x.name)
		if err != nil {
			missing.Missing = append(missing.Missing, x.name)
			need(x.pkg)
			if x.pkg == PackageTesseract {
				need(PackageTesseractEng) // its data comes apart
			}
			continue
		}
		*x.dst = Tool{Name: x.name, Path: path}
	}
	var errs []error
	for _, tool := range []*Tool{&t.PDFInfo, &t.PDFToPPM, &t.Tesseract} {
		if tool.Path == "" {
			continue
		}
		v, err := toolVersion(ctx, *tool)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tool.Version = v
	}
	if t.PDFToPPM.Path != "" {
		// -progress is how pages are handed on as they are done.
		help, err := probeTool(ctx, t.PDFToPPM.Path, "-h")
		var ee *osexec.ExitError
		switch {
		case err != nil && !errors.As(err, &ee):
			errs = append(errs, fmt.Errorf("pdftoppm -h: %w", err))
		case !strings.Contains(help, "-progress"):
			errs = append(errs, fmt.Errorf("pdftoppm %s has no -progress option: a newer %s is needed", t.PDFToPPM.Version, PackagePoppler))
		}
	}
	if t.Tesseract.Path != "" {
		langs, err := tesseractLanguages(ctx, t.Tesseract.Path)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !slices.Contains(langs, requiredLanguage):
			missing.Missing = append(missing.Missing, "tesseract language "+requiredLanguage)
			need(PackageTesseractEng)
		}
		t.Languages = langs
	}
	if len(missing.Missing) > 0 {
		missing.Err = errors.Join(errs...)
		return t, missing
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("PDF tools: %w", errors.Join(errs...))
	}
	return t, nil
}

// toolVersion runs the tool's version option: poppler's tools print
// "pdftoppm version 22.12.0" on stderr, tesseract "tesseract 5.3.0" on
// stdout.
func toolVersion(ctx context.Context, t Tool) (string, error) {
	flag := "-v"
	if t.Name == "tesseract" {
		flag = "--version"
	}
	out, err := probeTool(ctx, t.Path, flag)
	var ee *osexec.ExitError
	if err != nil && !(errors.As(err, &ee) && strings.Contains(out, "version")) {
		// Some poppler releases exit non-zero after printing their version.
		return "", fmt.Errorf("%s %s: %w", t.Name, flag, err)
	}
	return parseVersion(out), nil
}

// parseVersion takes the first line's version number: the word after
// "version", else the first word starting with a digit (or "v" and a
// digit).
func parseVersion(out string) string {
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	words := strings.Fields(first)
	for i, w := range words {
		if w == "version" && i+1 < len(words) {
			return words[i+1]
		}
	}
	for _, w := range words {
		if v := strings.TrimPrefix(w, "v"); v != "" && v[0] >= '0' && v[0] <= '9' {
			return v
		}
	}
	return first
}

// tesseractLanguages lists the languages tesseract has data for: the lines
// after its header "List of available languages in ...".
func tesseractLanguages(ctx context.Context, path string) ([]string, error) {
	out, err := probeTool(ctx, path, "--list-langs")
	if err != nil {
		return nil, fmt.Errorf("tesseract --list-langs: %w", err)
	}
	var langs []string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" || strings.Contains(line, " ") || strings.HasSuffix(line, ":") {
			continue
		}
		langs = append(langs, line)
	}
	return langs, nil
}

// probe runs a quick query of a tool and returns stdout and stderr
// together: which of the two a version lands on differs between tools.
func probeTool(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, toolProbeTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := osexec.CommandContext(ctx, path, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = toolWaitDelay
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return out.String(), fmt.Errorf("no answer within %s: %w", toolProbeTimeout, ctx.Err())
		}
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
