// Package cpustat reads the machine's CPU time from /proc/stat, so that benchmarks can report how much of it the
// hypervisor gave to other guests while they ran: on a shared 2-core machine that share, not the code, decides
// most of the latency figures' spread.
package cpustat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrNoCPULine is returned when /proc/stat has no aggregate "cpu" line.
var ErrNoCPULine = errors.New("no cpu line in /proc/stat")

// Sample is the machine's cumulative CPU time in clock ticks, all CPUs together.
type Sample struct {
	Total, Idle, Steal uint64
}

// Read takes a sample from /proc/stat.
func Read() (Sample, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return Sample{}, fmt.Errorf("failed to open /proc/stat: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 9 || fields[0] != "cpu" {
			continue
		}
		return parse(fields[1:])
	}
	if err = sc.Err(); err != nil {
		return Sample{}, fmt.Errorf("failed to read /proc/stat: %w", err)
	}
	return Sample{}, ErrNoCPULine
}

// parse reads user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already in user.
func parse(fields []string) (Sample, error) {
	var s Sample
	for i, f := range fields[:8] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return Sample{}, fmt.Errorf("failed to parse /proc/stat field %d %q: %w", i+1, f, err)
		}
		s.Total += v
		switch i {
		case 3, 4:
			s.Idle += v
		case 7:
			s.Steal = v
		}
	}
	return s, nil
}

// StealPercent is the share of the CPU time between from and to that the hypervisor stole, in percent.
func StealPercent(from, to Sample) float64 {
	if to.Total <= from.Total {
		return 0
	}
	return 100 * float64(to.Steal-from.Steal) / float64(to.Total-from.Total)
}
