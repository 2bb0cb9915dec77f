#!/usr/bin/env bash
# Installs the programs of the PDF app (docket serve --app pdf) when one is
# missing: pdfinfo and pdftoppm (Debian package poppler-utils), tesseract
# (tesseract-ocr) and its English data (tesseract-ocr-eng). Does nothing
# when they are all there. Uses apt-get, as root or through sudo; elsewhere
# it says what to install.
#
#   scripts/install-pdf-tools.sh      # run by make run (make setup) and .ci/run
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

# check: sets missing to the packages of the programs not found.
check() {
	missing=()
	if ! have pdftoppm || ! have pdfinfo; then missing+=(poppler-utils); fi
	if ! have tesseract; then missing+=(tesseract-ocr); fi
	if ! have tesseract || ! tesseract --list-langs 2>/dev/null | grep -qx eng; then missing+=(tesseract-ocr-eng); fi
}

check
if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "install-pdf-tools: installing ${missing[*]} for the PDF app"
if ! have apt-get; then
	echo "install-pdf-tools: no apt-get here: install poppler (pdftoppm, pdfinfo) and tesseract with its English data" \
		"with the system's package manager (macOS: brew install poppler tesseract)" >&2
	exit 1
fi
sudo=()
if ((EUID != 0)); then
	if ! have sudo; then
		echo "install-pdf-tools: run as root, or install sudo: apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
check
if ((${#missing[@]})); then
	echo "install-pdf-tools: still missing after apt-get install: ${missing[*]}" >&2
	exit 1
fi
echo "install-pdf-tools: installed $(pdftoppm -v 2>&1 | head -1), $(tesseract --version 2>&1 | head -1)"
