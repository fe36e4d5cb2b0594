package tesths

import "testing"

// Ports are picked before the servers that bind them start, so a second pick must not give a port again, and none
// may come from the ephemeral range where outgoing connections take ports meanwhile.
func TestFreePortNeverGivesAPortTwice(t *testing.T) {
	seen := make(map[int]bool)
	for range 500 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d given twice", port)
		}
		if port >= 32768 {
			t.Fatalf("port %d is in the ephemeral range", port)
		}
		seen[port] = true
	}
}
