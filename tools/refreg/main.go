// refreg: go-containerregistry's in-memory registry with the OCI 1.1 referrers API on, for the
// cosign bundle tests (tests/signatures/test_cosign_referrers.py). Usage: refreg 127.0.0.1:PORT
package main

import (
	"log"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: refreg HOST:PORT")
	}
	handler := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(os.Stderr, "", 0)))
	log.Fatal(http.ListenAndServe(os.Args[1], handler))
}
