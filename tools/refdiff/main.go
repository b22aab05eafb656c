// Command refdiff parses image references with the docker reference grammar
// (github.com/distribution/reference, the parser containerd and Docker use) so that Ostiary's own
// parser (app/images.py) can be tested against it.
//
// Input: one JSON string per line on stdin (JSON so that any text, newlines included, can be sent).
// Output: one JSON object per line on stdout, in order:
//
//	{"ok": true, "domain": "docker.io", "path": "library/nginx", "tag": "latest", "digest": ""}
//	{"ok": false, "error": "invalid reference format"}
//
// The name is normalized as the runtime does (ParseNormalizedNamed, then TagNameOnly, which adds
// "latest" only when neither tag nor digest was written).
package main

import (
	"bufio"
	_ "crypto/sha256" // register the digest algorithms, as containerd and Docker do
	_ "crypto/sha512"
	"encoding/json"
	"fmt"
	"os"

	"github.com/distribution/reference"
)

type result struct {
	OK     bool   `json:"ok"`
	Domain string `json:"domain,omitempty"`
	Path   string `json:"path,omitempty"`
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
}

func parse(s string) result {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return result{Error: err.Error()}
	}
	named = reference.TagNameOnly(named)
	out := result{OK: true, Domain: reference.Domain(named), Path: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		out.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		out.Digest = d.Digest().String()
	}
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var s string
		if err := json.Unmarshal(in.Bytes(), &s); err != nil {
			fmt.Fprintf(os.Stderr, "refdiff: each input line must be a JSON string: %v\n", err)
			os.Exit(2)
		}
		if err := enc.Encode(parse(s)); err != nil {
			fmt.Fprintf(os.Stderr, "refdiff: %v\n", err)
			os.Exit(1)
		}
		out.Flush()
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "refdiff: reading stdin: %v\n", err)
		os.Exit(1)
	}
}
