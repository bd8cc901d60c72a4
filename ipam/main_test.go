package ipam_test

import (
	"flag"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The cluster property test builds 3-7 allocators per check; keep the
	// default number of rapid checks moderate unless the caller chose one.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set && os.Getenv("RAPID_CHECKS") == "" {
		_ = flag.Set("rapid.checks", "40")
	}
	goleak.VerifyTestMain(m)
}
