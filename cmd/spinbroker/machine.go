package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// machine names what a bench run ran on, so that figures taken on
// different machines are not read as one series: the same 2-CPU host has
// been an AMD EPYC one day and an Intel Xeon another.
type machine struct {
	CPU      string `json:"cpu,omitempty"` // the CPU's model name, where the system tells it
	CPUs     int    `json:"cpus"`
	Go       string `json:"go"`
	Platform string `json:"platform"` // GOOS/GOARCH
}

func thisMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(f)
		f.Close()
	}
	return m
}

// cpuModel reads the first CPU's model name from Linux's /proc/cpuinfo:
// "model name" on x86, "Model" or "Hardware" on some ARM kernels; "" when
// none is there.
func cpuModel(r io.Reader) string {
	found := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.Join(strings.Fields(v), " ")
		if _, dup := found[k]; !dup && v != "" {
			found[k] = v
		}
	}
	for _, k := range []string{"model name", "Model", "Hardware"} {
		if v := found[k]; v != "" {
			return v
		}
	}
	return ""
}

func (m machine) String() string {
	cpu := m.CPU
	if cpu == "" {
		cpu = "CPU model unknown"
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s", cpu, m.CPUs, m.Go, m.Platform)
}
