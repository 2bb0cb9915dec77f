package pdfapp

import (
	"bytes"
	"crypto/md5"
	"crypto/rc4"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// testPDF builds a small valid PDF: one US Letter page per element of
// pages, each line of it in 28-point Helvetica, which tesseract reads
// without a mistake. With userPassword set, the document is encrypted with
// the standard security handler (RC4, 40 bits, revision 2), as PDF writers
// do for a document that asks for a password to open.
func testPDF(pages []string, userPassword string) []byte {
	var objs []string // objs[i] is object i+1
	add := func(s string) int {
		objs = append(objs, s)
		return len(objs)
	}
	catalog := add("")
	tree := add("")
	font := add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
	var kids []string
	var streams []int // objects whose stream data is encrypted
	for _, text := range pages {
		var c strings.Builder
		c.WriteString("BT /F1 28 Tf 36 TL 72 700 Td\n")
		for i, line := range strings.Split(text, "\n") {
			if i > 0 {
				c.WriteString("T*\n")
			}
			fmt.Fprintf(&c, "(%s) Tj\n", pdfEscape(line))
		}
		c.WriteString("ET\n")
		content := add(c.String())
		streams = append(streams, content)
		page := add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>", tree, font, content))
		kids = append(kids, fmt.Sprintf("%d 0 R", page))
	}
	objs[catalog-1] = fmt.Sprintf("<< /Type /Catalog /Pages %d 0 R >>", tree)
	objs[tree-1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), len(pages))

	id := md5.Sum([]byte(strings.Join(pages, "\f")))
	var key []byte
	encrypt := 0
	if userPassword != "" {
		var o, u []byte
		key, o, u = rc4Keys(userPassword, "owner-"+userPassword, id[:], -44)
		encrypt = add(fmt.Sprintf("<< /Filter /Standard /V 1 /R 2 /O <%x> /U <%x> /P -44 >>", o, u))
	}

	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offsets := make([]int, len(objs))
	for i, body := range objs {
		num := i + 1
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n", num)
		if slices.Contains(streams, num) {
			data := []byte(body)
			if key != nil {
				data = rc4Crypt(objectKey(key, num), data)
			}
			fmt.Fprintf(&b, "<< /Length %d >>\nstream\n", len(data))
			b.Write(data)
			b.WriteString("\nendstream")
		} else {
			b.WriteString(body)
		}
		b.WriteString("\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root %d 0 R /ID [<%x> <%x>]", len(objs)+1, catalog, id, id)
	if encrypt > 0 {
		fmt.Fprintf(&b, " /Encrypt %d 0 R", encrypt)
	}
	fmt.Fprintf(&b, " >>\nstartxref\n%d\n%%%%EOF\n", xref)
	return b.Bytes()
}

func pdfEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(s)
}

// passwordPad is the padding of the standard security handler.
var passwordPad = []byte{0x28, 0xBF, 0x4E, 0x5E, 0x4E, 0x75, 0x8A, 0x41, 0x64, 0x00, 0x4E, 0x56, 0xFF, 0xFA, 0x01, 0x08,
	0x2E, 0x2E, 0x00, 0xB6, 0xD0, 0x68, 0x3E, 0x80, 0x2F, 0x0C, 0xA9, 0xFE, 0x64, 0x53, 0x69, 0x7A}

func padPassword(p string) []byte {
	b := append([]byte(p), passwordPad...)
	return b[:32]
}

// rc4Keys computes the file key and the /O and /U entries of revision 2
// (PDF 1.7, algorithms 2, 3 and 4).
func rc4Keys(user, owner string, id []byte, perms int32) (key, o, u []byte) {
	ok := md5.Sum(padPassword(owner))
	o = rc4Crypt(ok[:5], padPassword(user))
	h := md5.New()
	h.Write(padPassword(user))
	h.Write(o)
	binary.Write(h, binary.LittleEndian, perms)
	h.Write(id)
	key = h.Sum(nil)[:5]
	u = rc4Crypt(key, passwordPad)
	return key, o, u
}

// objectKey is the key of one object's strings and streams (algorithm 1).
func objectKey(key []byte, num int) []byte {
	b := append(append([]byte(nil), key...), byte(num), byte(num>>8), byte(num>>16), 0, 0)
	sum := md5.Sum(b)
	return sum[:min(len(key)+5, 16)]
}

func rc4Crypt(key, data []byte) []byte {
	c, err := rc4.NewCipher(key)
	if err != nil {
		panic(err)
	}
	out := make([]byte, len(data))
	c.XORKeyStream(out, data)
	return out
}
