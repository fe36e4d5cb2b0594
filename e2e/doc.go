// Package e2e holds lmbridge's end-to-end tests against real homeservers started by internal/tesths. The
// application-service tests run the real lmbridge binary as a subprocess, so that they can kill it with SIGKILL; the
// bridge tests wire lmbridge's parts in this process exactly as cmd/lmbridge does, beside a second LM server of ours
// whose users the test drives, and every call between them crosses real HTTP. The MIMI test runs two lmbridge binaries
// on two homeservers as two MIMI providers, with mutual TLS from a throwaway CA (internal/testca). The tests skip when no homeserver is
// installed (see tesths.Available), and fail instead when LMBRIDGE_TEST_REQUIRE_HOMESERVERS=1.
package e2e
