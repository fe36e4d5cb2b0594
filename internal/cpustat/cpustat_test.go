package cpustat

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	s, err := parse(strings.Fields("100 5 50 800 10 1 4 30 7 0"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Total != 1000 || s.Idle != 810 || s.Steal != 30 {
		t.Fatalf("parsed %+v, want total 1000, idle 810, steal 30", s)
	}
	if _, err = parse(strings.Fields("1 2 x 4 5 6 7 8")); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("a bad field gave %v, want an error naming it", err)
	}
}

func TestStealPercent(t *testing.T) {
	from := Sample{Total: 1000, Steal: 100}
	to := Sample{Total: 3000, Steal: 600}
	if got := StealPercent(from, to); got != 25 {
		t.Fatalf("steal %v%%, want 25%%", got)
	}
	if got := StealPercent(to, to); got != 0 {
		t.Fatalf("steal over no time %v%%, want 0", got)
	}
}

func TestReadOnThisMachine(t *testing.T) {
	s, err := Read()
	if err != nil {
		t.Skipf("no /proc/stat here: %v", err)
	}
	if s.Total == 0 || s.Idle > s.Total || s.Steal > s.Total {
		t.Fatalf("implausible sample %+v", s)
	}
}
