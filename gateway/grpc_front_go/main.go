// Command promoter-grpc-front is the gateway replica's public gRPC server (inference.GRPCInferenceService),
// started and fed by the Python replica (gateway/grpc_front.py): see the README, "gRPC API".
//
// It reads its settings as one JSON document (--config), then newline-delimited JSON on stdin:
//
//	{"models": {"<name>": {"routes": [{"alias", "triton", "version"}...], "default", "buckets", "shadow"} | null}}
//	{"ejected": {"endpoints": [index...], "models": {"<triton model>": [index...]}}}
//	{"metrics": <id>}
//
// and writes newline-delimited JSON on stdout: {"listening": "<host:port>"} once serving, the answer to each
// {"metrics": id}, and {"failed": {...}} for each Triton failure it handed to the slow path. Its stdin
// closing (the replica stopped or died) stops it; SIGINT and SIGTERM are ignored. Logs are JSON lines on
// stderr, in the replica's format.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
)

const gcPercent = 400

type config struct {
	Listen          string    `json:"listen"`
	SlowPath        string    `json:"slow_path"`
	Endpoints       []string  `json:"endpoints"`
	ClientHeader    string    `json:"client_header"`
	AliasHeader     string    `json:"alias_header"`
	VersionTrailer  string    `json:"version_trailer"`
	AliasTrailer    string    `json:"alias_trailer"`
	TimeoutS        float64   `json:"timeout_s"`
	MaxMessageBytes int       `json:"max_message_bytes"`
	LatencyBuckets  []float64 `json:"latency_buckets"`
	StopGraceS      float64   `json:"stop_grace_s"`
	Threads         int       `json:"threads"` // GOMAXPROCS; 0: Go's default (the cores it may use)
}

type control struct {
	Models  map[string]*modelUpdate `json:"models"`
	Ejected *struct {
		Endpoints []int            `json:"endpoints"`
		Models    map[string][]int `json:"models"`
	} `json:"ejected"`
	Metrics *int64 `json:"metrics"`
}

// output writes the JSON lines of stdout, one at a time.
type output struct {
	mu     sync.Mutex
	writer *bufio.Writer
}

func (o *output) send(value any) {
	line, err := json.Marshal(value)
	if err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writer.Write(append(line, '\n'))
	o.writer.Flush()
}

func newLogger() *slog.Logger {
	handler := slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, attr slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return attr
			}
			switch attr.Key {
			case slog.TimeKey:
				return slog.String("timestamp", attr.Value.Time().UTC().Format("2006-01-02T15:04:05.000000Z"))
			case slog.LevelKey:
				return slog.String("level", strings.ToLower(attr.Value.String()))
			case slog.MessageKey:
				return slog.String("event", attr.Value.String())
			}
			return attr
		},
	})
	return slog.New(handler).With("logger", "gateway.grpc_front", "service", "gateway")
}

func main() {
	configJSON := flag.String("config", "", "settings as one JSON document (written by gateway/grpc_front.py)")
	flag.Parse()
	// The replica stops it by closing its stdin, after its own graceful stop began; a signal to the whole
	// process group (Ctrl-C, a supervisor's SIGTERM) must not cut the requests in flight before that.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	if os.Getenv("GOGC") == "" {
		// The live heap is small (routes, connections, the requests in flight), so the default GOGC=100 collects
		// every few hundred requests; 400 collects a quarter as often for a few more MiB of memory.
		debug.SetGCPercent(gcPercent)
	}
	log := newLogger()
	var settings config
	if err := json.Unmarshal([]byte(*configJSON), &settings); err != nil {
		log.Error("unreadable --config", "error", err.Error())
		os.Exit(2)
	}
	if settings.Threads > 0 {
		// One P keeps a request's hand-offs (reader, handler, writers) on one thread: no wake-ups of idle
		// threads that spin looking for work, about 15% less CPU per request than two Ps on 2 cores.
		runtime.GOMAXPROCS(settings.Threads)
	}
	if err := run(settings, log, os.Stdin, os.Stdout); err != nil {
		log.Error("gRPC front stopped on an error", "error", err.Error())
		os.Exit(1)
	}
}

func run(settings config, log *slog.Logger, in *os.File, out *os.File) error {
	stdout := &output{writer: bufio.NewWriter(out)}
	if len(settings.Endpoints) == 0 {
		return fmt.Errorf("no Triton gRPC endpoint in the settings")
	}
	metrics := newFrontMetrics(settings.LatencyBuckets)
	tritons := &endpoints{targets: settings.Endpoints}
	for _, target := range settings.Endpoints {
		conn, err := dial(target, settings.MaxMessageBytes)
		if err != nil {
			return fmt.Errorf("Triton endpoint %q: %w", target, err)
		}
		tritons.conns = append(tritons.conns, conn)
	}
	slow, err := dial(settings.SlowPath, settings.MaxMessageBytes)
	if err != nil {
		return fmt.Errorf("slow path %q: %w", settings.SlowPath, err)
	}
	f := &front{
		tritons:      tritons,
		slow:         slow,
		timeout:      time.Duration(settings.TimeoutS * float64(time.Second)),
		clientHeader: strings.ToLower(settings.ClientHeader),
		aliasHeader:  strings.ToLower(settings.AliasHeader),
		versionKey:   settings.VersionTrailer,
		aliasKey:     settings.AliasTrailer,
		metrics:      metrics,
		reports:      func(failed failure) { stdout.send(map[string]failure{"failed": failed}) },
		log:          log,
	}
	empty := map[string]*modelRoutes{}
	f.snapshot.Store(&empty)

	listener, err := net.Listen("tcp", settings.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", settings.Listen, err)
	}
	server := grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.StaticStreamWindowSize(streamWindowBytes),
		grpc.StaticConnWindowSize(connectionWindowBytes),
		// Requests run on long-lived goroutines instead of one new goroutine (and stack growth) each.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.UnknownServiceHandler(f.handle),
		grpc.MaxRecvMsgSize(settings.MaxMessageBytes),
		grpc.MaxSendMsgSize(1<<31-1),
	)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	stdout.send(map[string]string{"listening": listener.Addr().String()})
	log.Info("gRPC front started", "address", listener.Addr().String(), "slow_path", settings.SlowPath,
		"triton_endpoints", settings.Endpoints)

	readErr := follow(in, f, stdout, log)
	log.Info("gRPC front stopping", "why", "the gateway closed its feed")
	stopped := make(chan struct{})
	go func() { server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Duration(settings.StopGraceS * float64(time.Second))):
		server.Stop()
	}
	for _, conn := range append(tritons.conns, slow) {
		conn.Close()
	}
	if readErr != nil {
		return readErr
	}
	select {
	case err := <-served:
		if err != nil && err != grpc.ErrServerStopped {
			return err
		}
	default:
	}
	return nil
}

// follow applies the control lines of “in“ until it closes.
func follow(in *os.File, f *front, stdout *output, log *slog.Logger) error {
	reader := bufio.NewReaderSize(in, 1<<20)
	for {
		line, err := reader.ReadBytes('\n')
		if len(line) > 0 {
			var message control
			if jsonErr := json.Unmarshal(line, &message); jsonErr != nil {
				log.Error("unreadable control line from the gateway", "error", jsonErr.Error())
			} else {
				apply(f, message, stdout)
			}
		}
		if err != nil {
			return nil // EOF: the gateway stopped (or died)
		}
	}
}

// apply is one control message: a new snapshot is one pointer swap; a request that read the old one finishes
// on the route it chose.
func apply(f *front, message control, stdout *output) {
	if message.Models != nil {
		current := *f.snapshot.Load()
		next := make(map[string]*modelRoutes, len(current)+len(message.Models))
		for name, model := range current {
			next[name] = model
		}
		for name, update := range message.Models {
			if update == nil {
				delete(next, name)
			} else {
				next[name] = buildModel(name, *update, f.metrics)
			}
		}
		f.snapshot.Store(&next)
	}
	if message.Ejected != nil {
		out := &ejections{endpoints: map[int]bool{}, models: map[string]map[int]bool{}}
		for _, index := range message.Ejected.Endpoints {
			out.endpoints[index] = true
		}
		for triton, indexes := range message.Ejected.Models {
			out.models[triton] = map[int]bool{}
			for _, index := range indexes {
				out.models[triton][index] = true
			}
		}
		f.tritons.ejected.Store(out)
	}
	if message.Metrics != nil {
		stdout.send(f.metrics.report(*message.Metrics))
	}
}
