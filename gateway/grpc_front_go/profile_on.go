//go:build profile

package main

// Built with `-tags profile` only (measurement, never in the shipped binary): PROMOTER_GRPC_FRONT_CPUPROFILE=<file>
// writes a CPU profile of the first PROMOTER_GRPC_FRONT_CPUPROFILE_S seconds (default 30) after start.

import (
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	path := os.Getenv("PROMOTER_GRPC_FRONT_CPUPROFILE")
	if path == "" {
		return
	}
	seconds, err := strconv.ParseFloat(os.Getenv("PROMOTER_GRPC_FRONT_CPUPROFILE_S"), 64)
	if err != nil {
		seconds = 30
	}
	file, err := os.Create(path)
	if err != nil {
		return
	}
	if err := pprof.StartCPUProfile(file); err != nil {
		return
	}
	time.AfterFunc(time.Duration(seconds*float64(time.Second)), func() {
		pprof.StopCPUProfile()
		file.Close()
	})
}
