package main

// The two messages the fast path touches, read and rewritten at the protobuf wire level: only the fields it
// changes are decoded; tensors are copied as opaque bytes. Field numbers are those of Triton's
// grpc_service.proto (ModelInferRequest, ModelInferResponse, InferParameter).

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	fieldModelName    protowire.Number = 1 // ModelInferRequest and ModelInferResponse
	fieldModelVersion protowire.Number = 2
	fieldParameters   protowire.Number = 4 // map<string, InferParameter>
	fieldMapKey       protowire.Number = 1
	fieldMapValue     protowire.Number = 2
	fieldStringParam  protowire.Number = 3 // InferParameter.string_param
)

var errMalformed = errors.New("malformed protobuf message")

// inferTarget is what a ModelInferRequest asks for: the model name and version (empty: not given).
type inferTarget struct {
	model   string
	version string
}

// readTarget reads model_name and model_version from a serialized ModelInferRequest (the last value of a
// field wins, as protobuf parsers do).
func readTarget(message []byte) (inferTarget, error) {
	var target inferTarget
	for len(message) > 0 {
		number, kind, length := protowire.ConsumeTag(message)
		if length < 0 {
			return target, errMalformed
		}
		message = message[length:]
		if (number == fieldModelName || number == fieldModelVersion) && kind == protowire.BytesType {
			value, size := protowire.ConsumeBytes(message)
			if size < 0 {
				return target, errMalformed
			}
			if number == fieldModelName {
				target.model = string(value)
			} else {
				target.version = string(value)
			}
			message = message[size:]
			continue
		}
		size := protowire.ConsumeFieldValue(number, kind, message)
		if size < 0 {
			return target, errMalformed
		}
		message = message[size:]
	}
	return target, nil
}

// withTarget is “message“ (a ModelInferRequest or ModelInferResponse) with model_name set to “name“,
// model_version to “version“ (omitted when empty) and the string parameters “params“ added (they replace
// any of the same key: a map's last entry wins); every other field is copied unchanged, in order.
func withTarget(message []byte, name, version string, params ...[2]string) ([]byte, error) {
	room := len(message) + len(name) + len(version) + 16
	for _, param := range params {
		room += len(param[0]) + len(param[1]) + 16
	}
	out := make([]byte, 0, room)
	out = protowire.AppendTag(out, fieldModelName, protowire.BytesType)
	out = protowire.AppendString(out, name)
	if version != "" {
		out = protowire.AppendTag(out, fieldModelVersion, protowire.BytesType)
		out = protowire.AppendString(out, version)
	}
	for len(message) > 0 {
		number, kind, length := protowire.ConsumeTag(message)
		if length < 0 {
			return nil, errMalformed
		}
		size := protowire.ConsumeFieldValue(number, kind, message[length:])
		if size < 0 {
			return nil, errMalformed
		}
		if number != fieldModelName && number != fieldModelVersion {
			out = append(out, message[:length+size]...)
		}
		message = message[length+size:]
	}
	for _, param := range params {
		out = appendStringParameter(out, param[0], param[1])
	}
	return out, nil
}

// appendStringParameter appends one map entry key -> InferParameter{string_param: value}, written in place.
func appendStringParameter(out []byte, key, value string) []byte {
	parameterSize := protowire.SizeTag(fieldStringParam) + protowire.SizeBytes(len(value))
	entrySize := protowire.SizeTag(fieldMapKey) + protowire.SizeBytes(len(key)) +
		protowire.SizeTag(fieldMapValue) + protowire.SizeBytes(parameterSize)
	out = protowire.AppendTag(out, fieldParameters, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(entrySize))
	out = protowire.AppendTag(out, fieldMapKey, protowire.BytesType)
	out = protowire.AppendString(out, key)
	out = protowire.AppendTag(out, fieldMapValue, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(parameterSize))
	out = protowire.AppendTag(out, fieldStringParam, protowire.BytesType)
	return protowire.AppendString(out, value)
}
