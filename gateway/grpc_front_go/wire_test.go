package main

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func appendString(out []byte, number protowire.Number, value string) []byte {
	out = protowire.AppendTag(out, number, protowire.BytesType)
	return protowire.AppendString(out, value)
}

// A ModelInferRequest as tritonclient sends it: model_name, model_version, id, an input, raw contents.
func sampleRequest() []byte {
	var input []byte
	input = appendString(input, 1, "input")
	input = appendString(input, 2, "FP64")
	var message []byte
	message = appendString(message, 1, "iris")
	message = appendString(message, 2, "7")
	message = appendString(message, 3, "request-1")
	message = protowire.AppendTag(message, 5, protowire.BytesType)
	message = protowire.AppendBytes(message, input)
	message = protowire.AppendTag(message, 7, protowire.BytesType)
	message = protowire.AppendBytes(message, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	return message
}

type field struct {
	number protowire.Number
	value  []byte
}

func fields(t *testing.T, message []byte) []field {
	t.Helper()
	var out []field
	for len(message) > 0 {
		number, kind, length := protowire.ConsumeTag(message)
		if length < 0 || kind != protowire.BytesType {
			t.Fatalf("unexpected tag in %x", message)
		}
		value, size := protowire.ConsumeBytes(message[length:])
		if size < 0 {
			t.Fatal("bad length")
		}
		out = append(out, field{number, value})
		message = message[length+size:]
	}
	return out
}

func TestReadTarget(t *testing.T) {
	target, err := readTarget(sampleRequest())
	if err != nil || target != (inferTarget{"iris", "7"}) {
		t.Fatalf("got %+v, %v", target, err)
	}
	if _, err := readTarget([]byte{0x0a, 0x05, 'i'}); err == nil {
		t.Fatal("a truncated message must be refused")
	}
	target, err = readTarget(nil)
	if err != nil || target != (inferTarget{}) {
		t.Fatalf("empty message: %+v, %v", target, err)
	}
}

func TestWithTargetRewritesOnlyNameAndVersion(t *testing.T) {
	rewritten, err := withTarget(sampleRequest(), "iris__v7_abc", "")
	if err != nil {
		t.Fatal(err)
	}
	got := fields(t, rewritten)
	want := fields(t, sampleRequest())
	if string(got[0].value) != "iris__v7_abc" || got[0].number != 1 {
		t.Fatalf("model_name: %+v", got[0])
	}
	// Version dropped; id, inputs and raw contents unchanged and in order.
	rest := got[1:]
	if len(rest) != 3 {
		t.Fatalf("fields after the name: %+v", rest)
	}
	for index, f := range rest {
		if f.number != want[index+2].number || !bytes.Equal(f.value, want[index+2].value) {
			t.Fatalf("field %d changed: %+v vs %+v", index, f, want[index+2])
		}
	}
}

func TestWithTargetSetsTheAnswerAndItsParameters(t *testing.T) {
	answer, err := withTarget(sampleRequest(), "iris", "7", [2]string{"alias", "champion"}, [2]string{"triton_model_name", "iris__v7"})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := readTarget(answer)
	if target != (inferTarget{"iris", "7"}) {
		t.Fatalf("got %+v", target)
	}
	parameters := map[string]string{}
	for _, f := range fields(t, answer) {
		if f.number != fieldParameters {
			continue
		}
		entry := fields(t, f.value)
		value := fields(t, entry[1].value)
		if value[0].number != fieldStringParam {
			t.Fatalf("not a string_param: %+v", value)
		}
		parameters[string(entry[0].value)] = string(value[0].value)
	}
	if parameters["alias"] != "champion" || parameters["triton_model_name"] != "iris__v7" || len(parameters) != 2 {
		t.Fatalf("parameters: %v", parameters)
	}
}

// The fast path's own work on one request: read the target, decide, rewrite the request and the answer
// (`go test -bench . -benchmem`).
func BenchmarkFastPathRewrites(b *testing.B) {
	message := sampleRequest()
	models := map[string]*modelRoutes{"iris": buildModel("iris", modelUpdate{
		Routes: []routeUpdate{{Alias: "champion", Triton: "iris--v7", Version: 7}}, Default: "champion",
	}, newFrontMetrics([]float64{0.001, 0.01}))}
	b.ReportAllocs()
	for b.Loop() {
		target, _ := readTarget(message)
		chosen := decide(models, request{target: target})
		upstream, _ := withTarget(message, chosen.Triton, "")
		_, _ = withTarget(upstream, chosen.Model, chosen.versionText,
			[2]string{"alias", chosen.Alias}, [2]string{"triton_model_name", chosen.Triton})
	}
}
