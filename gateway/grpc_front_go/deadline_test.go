package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestAnswerByEndsBeforeTheCallersDeadline(t *testing.T) {
	deadline := time.Now().Add(time.Second)
	caller, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	answering, stop := answerBy(caller)
	defer stop()
	got, ok := answering.Deadline()
	if !ok || deadline.Sub(got) != deadlineMargin {
		t.Fatalf("deadline brought forward by %v, want %v", deadline.Sub(got), deadlineMargin)
	}
	// A short deadline keeps nine tenths of its time.
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	briefly, stopBriefly := answerBy(short)
	defer stopBriefly()
	left, _ := briefly.Deadline()
	if margin := mustDeadline(t, short).Sub(left); margin <= 0 || margin > 5*time.Millisecond {
		t.Fatalf("a 50 ms deadline brought forward by %v, want at most 5 ms", margin)
	}
	// No deadline: none is added.
	unbounded, stopUnbounded := answerBy(context.Background())
	defer stopUnbounded()
	if _, ok := unbounded.Deadline(); ok {
		t.Fatal("a caller without a deadline got one")
	}
}

func TestCallerGoneSaysDeadlineExceededBeforeTheTransportResetsTheStream(t *testing.T) {
	caller, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	answering, stop := answerBy(caller)
	if gone := callerGone(caller, answering); gone != nil {
		t.Fatalf("nothing ended yet, got %+v", gone)
	}
	stop() // as when the brought-forward deadline passes: the caller's own has not
	gone := callerGone(caller, answering)
	if gone == nil || gone.Code != codes.DeadlineExceeded || gone.Status != 504 || gone.Outcome != "timeout" {
		t.Fatalf("got %+v, want a 504 DEADLINE_EXCEEDED timeout", gone)
	}
	cancel() // the caller went away: not counted
	if gone := callerGone(caller, answering); gone == nil || gone.Code != codes.Canceled || gone.Status != 0 {
		t.Fatalf("got %+v, want an uncounted CANCELLED", gone)
	}
}

func mustDeadline(t *testing.T, ctx context.Context) time.Time {
	t.Helper()
	deadline, ok := ctx.Deadline()
	if !ok {
		t.Fatal("no deadline")
	}
	return deadline
}
