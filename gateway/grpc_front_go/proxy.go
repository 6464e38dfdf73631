package main

// The public gRPC server: ModelInfer on the fast path when the snapshot decides it, everything else (every
// other RPC, what the snapshot cannot decide, any Triton failure) forwarded as raw bytes with its metadata to
// the Python replica's own gRPC server, whose answer (message, status, trailers) goes back unchanged.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const modelInfer = "/inference.GRPCInferenceService/ModelInfer"

// rawCodec passes messages through as bytes (*[]byte): sent without a copy, received with one (gRPC frees
// its buffers once Unmarshal returns).
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*(v.(*[]byte)))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// Flow-control windows, fixed on every connection (the public server's and those to Triton and the slow path).
// Fixed windows turn off gRPC's bandwidth-delay estimation, whose PING frames (one per burst of data received,
// each answered by the peer) cost both ends syscalls and wake-ups on every request at small-message rates; a
// window of 4 MiB per stream and 16 MiB per connection does not throttle a message on a LAN.
const (
	streamWindowBytes     = 4 << 20
	connectionWindowBytes = 16 << 20
)

// endpoints are the Triton gRPC connections, in the order of Python's rotation, and which are out of it.
type endpoints struct {
	conns   []*grpc.ClientConn
	targets []string
	ejected atomic.Pointer[ejections]
	next    atomic.Uint64
}

// ejections mirror gateway.endpoint_rotation: whole endpoints, and (endpoint, Triton model) pairs.
type ejections struct {
	endpoints map[int]bool
	models    map[string]map[int]bool
}

// choose is the next endpoint in rotation for “triton“ (round robin), or -1 when none is: the slow path's
// rotation then decides (trials, least recently failed).
func (e *endpoints) choose(triton string) int {
	out := e.ejected.Load()
	count := len(e.conns)
	start := int(e.next.Add(1) % uint64(count))
	for step := 0; step < count; step++ {
		index := (start + step) % count
		if out == nil || (!out.endpoints[index] && !out.models[triton][index]) {
			return index
		}
	}
	return -1
}

func dial(target string, maxMessageBytes int) (*grpc.ClientConn, error) {
	return grpc.NewClient(
		"passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(streamWindowBytes),
		grpc.WithStaticConnWindowSize(connectionWindowBytes),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(rawCodec{}),
			grpc.MaxCallRecvMsgSize(maxMessageBytes),
			grpc.MaxCallSendMsgSize(maxMessageBytes),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
}

// front answers the public port.
type front struct {
	snapshot     atomic.Pointer[map[string]*modelRoutes]
	tritons      *endpoints
	slow         *grpc.ClientConn
	timeout      time.Duration
	clientHeader string
	aliasHeader  string
	versionKey   string
	aliasKey     string
	metrics      *frontMetrics
	reports      func(failure) // what failed on a Triton endpoint, for Python's rotation
	log          *slog.Logger
}

// failure is a Triton attempt that failed on the fast path before Triton ran it (the request then went to the
// slow path), for the slow path's rotation to eject the endpoint (or the endpoint's model).
type failure struct {
	Endpoint int    `json:"endpoint"`
	Triton   string `json:"triton_model"`
	Reason   string `json:"reason"` // classify's RetryReason: unreachable, unknown_model
}

// handle is the server's only handler (grpc.UnknownServiceHandler): every RPC of every service comes here.
func (f *front) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	if method != modelInfer {
		return f.relay(stream, method)
	}
	var message []byte
	if err := stream.RecvMsg(&message); err != nil {
		return err
	}
	ctx := stream.Context()
	incoming, _ := metadata.FromIncomingContext(ctx)
	target, err := readTarget(message)
	if err != nil {
		return f.forward(stream, method, message, incoming) // the slow path words the error
	}
	chosen := decide(*f.snapshot.Load(), request{target, last(incoming, f.aliasHeader), last(incoming, f.clientHeader)})
	if chosen == nil {
		return f.forward(stream, method, message, incoming)
	}
	began := time.Now()
	answer, failed := f.infer(ctx, chosen, message)
	if failed == nil && answer == nil {
		return f.forward(stream, method, message, incoming)
	}
	defer func() { chosen.series.latency.observe(time.Since(began)) }()
	trailer := metadata.Pairs(f.versionKey, chosen.versionText, f.aliasKey, chosen.Alias)
	if failed != nil {
		if ctx.Err() == nil { // Triton's failure, answered as the slow path would have
			stream.SetTrailer(trailer)
			f.log.Warn("upstream failure", "model", chosen.Model, "alias", chosen.Alias, "protocol", "grpc",
				"error", failed.Message)
		}
		chosen.series.failed(failed.Status, failed.Outcome)
		return status.Error(failed.Code, failed.Message)
	}
	stream.SetTrailer(trailer)
	if err := stream.SendMsg(&answer); err != nil {
		return err
	}
	chosen.series.answered.Add(1)
	return nil
}

// deadlineMargin is how much sooner than the caller's deadline the front gives up on an upstream call and
// answers DEADLINE_EXCEEDED itself (at most a tenth of the time left). At the deadline itself grpc-go's server
// transport resets the stream with CANCEL; a caller whose own deadline timer had not fired yet (its clock and
// the header's rounding give it a few hundred microseconds either way) then reported CANCELLED, 1 in 40 times
// against a hung Triton. Envoy's grpc_timeout_header_offset exists for the same reason.
const deadlineMargin = 20 * time.Millisecond

// answerBy is “ctx“ with its deadline brought forward by “deadlineMargin“ (unchanged without a deadline).
func answerBy(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-min(deadlineMargin, time.Until(deadline)/10)))
}

// callerGone is the answer when the caller's context ended, or its deadline (brought forward: “answerBy“)
// passed, before the upstream answered: a 504 timeout, or, when the caller went away, a status not counted (no
// one reads it). Nil while neither happened.
func callerGone(caller, answering context.Context) *upstreamError {
	if errors.Is(caller.Err(), context.Canceled) {
		gone := status.FromContextError(caller.Err())
		return &upstreamError{Code: gone.Code(), Message: gone.Message()}
	}
	if answering.Err() != nil {
		return &upstreamError{Status: 504, Code: codes.DeadlineExceeded, Outcome: "timeout",
			Message: "the caller's deadline passed before Triton answered"}
	}
	return nil
}

// infer sends “message“ to “chosen“'s Triton model. It returns Triton's answer, or the failure to answer the
// caller with (Triton's, classified as the slow path does, or the caller's deadline), or neither when the slow
// path must answer instead: no endpoint in rotation, an answer Go cannot rewrite, or a failure after which
// Triton provably did not run the request (no connection to the endpoint, or the model not there), so the
// slow path's rotation may send it to another endpoint. Triton never sees a request twice from here.
func (f *front) infer(ctx context.Context, chosen *route, message []byte) ([]byte, *upstreamError) {
	index := f.tritons.choose(chosen.Triton)
	if index < 0 {
		return nil, nil
	}
	upstream, err := withTarget(message, chosen.Triton, "")
	if err != nil {
		return nil, nil
	}
	answering, stop := answerBy(ctx)
	defer stop()
	callCtx, cancel := context.WithTimeout(answering, f.timeout)
	defer cancel()
	var reply []byte
	err = f.tritons.conns[index].Invoke(callCtx, modelInfer, &upstream, &reply)
	if gone := callerGone(ctx, answering); gone != nil {
		return nil, gone
	}
	if err != nil {
		failed := status.Convert(err)
		classified := classify(failed.Code(), failed.Message())
		if classified.RetryReason == "" {
			return nil, &classified
		}
		f.reports(failure{index, chosen.Triton, classified.RetryReason})
		return nil, nil
	}
	answer, err := withTarget(reply, chosen.Model, chosen.versionText,
		[2]string{"alias", chosen.Alias}, [2]string{"triton_model_name", chosen.Triton})
	if err != nil {
		f.log.Warn("unreadable answer from Triton, sent to the slow path", "triton_model", chosen.Triton)
		return nil, nil
	}
	return answer, nil
}

// forward sends one unary request to the slow path and relays its answer, status and trailers.
func (f *front) forward(stream grpc.ServerStream, method string, message []byte, incoming metadata.MD) error {
	answering, stop := answerBy(stream.Context())
	defer stop()
	ctx := metadata.NewOutgoingContext(answering, forwarded(incoming))
	var reply []byte
	var header, trailer metadata.MD
	err := f.slow.Invoke(ctx, method, &message, &reply, grpc.Header(&header), grpc.Trailer(&trailer))
	stream.SetTrailer(trailer)
	if err != nil {
		if gone := callerGone(stream.Context(), answering); gone != nil {
			return status.Error(gone.Code, gone.Message)
		}
		return err
	}
	if len(header) > 0 {
		if err := stream.SetHeader(header); err != nil {
			return err
		}
	}
	return stream.SendMsg(&reply)
}

// relay proxies any RPC (streaming or not) to the slow path, message by message both ways.
func (f *front) relay(stream grpc.ServerStream, method string) error {
	incoming, _ := metadata.FromIncomingContext(stream.Context())
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(stream.Context(), forwarded(incoming)))
	defer cancel()
	upstream, err := f.slow.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for {
			var message []byte
			if err := stream.RecvMsg(&message); err != nil {
				if errors.Is(err, io.EOF) {
					sent <- upstream.CloseSend()
				} else {
					sent <- err
				}
				return
			}
			if err := upstream.SendMsg(&message); err != nil {
				sent <- nil // the upstream's status is read below
				return
			}
		}
	}()
	if header, err := upstream.Header(); err == nil && len(header) > 0 {
		_ = stream.SendHeader(header)
	}
	for {
		var message []byte
		if err := upstream.RecvMsg(&message); err != nil {
			stream.SetTrailer(upstream.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.SendMsg(&message); err != nil {
			return err
		}
	}
}

// forwarded is the caller's metadata without what gRPC sets itself on the next hop.
func forwarded(incoming metadata.MD) metadata.MD {
	out := metadata.MD{}
	for key, values := range incoming {
		if strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-") ||
			key == "content-type" || key == "user-agent" || key == "te" {
			continue
		}
		out[key] = values
	}
	return out
}

// last is the value of “key“ (the last one when repeated, as the Python server reads metadata).
func last(md metadata.MD, key string) string {
	if values := md.Get(key); len(values) > 0 {
		return values[len(values)-1]
	}
	return ""
}
