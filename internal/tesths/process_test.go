package tesths

import (
	"net"
	"os"
	"testing"
)

func TestOwnsListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	defer l.Close()
	url := "http://" + l.Addr().String()
	inode, err := listeningSocketInode(l.Addr().(*net.TCPAddr).Port)
	if err != nil || inode == "" {
		t.Fatalf("did not find our listener in /proc/net/tcp: inode %q, err %v", inode, err)
	}
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatalf("failed to find own process: %v", err)
	}
	if !(&process{cmdPID: self.Pid}).ownsListener(url) {
		t.Errorf("our own listener at %s is reported as someone else's", url)
	}
	if (&process{cmdPID: 1}).ownsListener(url) {
		t.Errorf("our listener at %s is reported as belonging to pid 1", url)
	}
}
