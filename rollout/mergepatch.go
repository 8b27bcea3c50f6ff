package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// statusPatch is the JSON merge patch that turns status from into to, nil when the two
// encode alike (a write would change nothing). The statuses are encoded and compared key
// by key (mergeDiff), not through a general JSON diff: that diff was a third of a status
// write's CPU in make bench.
func statusPatch(from, to *v1beta1.CanaryStatus) ([]byte, error) {
	a, err := json.Marshal(from)
	if err != nil {
		return nil, fmt.Errorf("encode canary status: %w", err)
	}
	b, err := json.Marshal(to)
	if err != nil {
		return nil, fmt.Errorf("encode canary status: %w", err)
	}
	if bytes.Equal(a, b) {
		return nil, nil
	}
	out := append(make([]byte, 0, len(b)/2+16), `{"status":`...)
	if out, err = mergeDiff(out, a, b); err != nil {
		return nil, fmt.Errorf("diff canary status: %w", err)
	}
	return append(out, '}'), nil
}

// mergeDiff appends to out the merge patch (RFC 7386) from object a to object b: b's
// members that differ, a member of a that b lacks as null, objects on both sides diffed
// in turn. Any other value (arrays included) is b's, whole, as a merge patch has it.
// It reads the two encodings in place: unmarshalling them into maps of raw messages
// copied every member and was most of a status write's garbage. Finding a key scans the
// other object again; a status has a few dozen members at most.
func mergeDiff(out, a, b []byte) ([]byte, error) {
	if err := eachMember(a, func(_, _ []byte) {}); err != nil {
		return nil, err
	}
	if err := eachMember(b, func(_, _ []byte) {}); err != nil {
		return nil, err
	}
	out = append(out, '{')
	first := true
	add := func(key []byte) {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(append(out, key...), ':')
	}
	_ = eachMember(a, func(key, _ []byte) {
		if _, ok := lookup(b, key); !ok {
			add(key)
			out = append(out, "null"...)
		}
	})
	var err error
	_ = eachMember(b, func(key, bv []byte) {
		av, ok := lookup(a, key)
		switch {
		case err != nil, ok && bytes.Equal(av, bv):
		case ok && isObject(av) && isObject(bv):
			add(key)
			out, err = mergeDiff(out, av, bv)
		default:
			add(key)
			out = append(out, bv...)
		}
	})
	if err != nil {
		return nil, err
	}
	return append(out, '}'), nil
}

// lookup is the encoded value of the member of obj whose quoted key is key.
func lookup(obj, key []byte) (val []byte, ok bool) {
	_ = eachMember(obj, func(k, v []byte) {
		if !ok && bytes.Equal(k, key) {
			val, ok = v, true
		}
	})
	return val, ok
}

func isObject(v []byte) bool { return len(v) > 0 && v[0] == '{' }

var errNotObject = errors.New("not a JSON object")

// eachMember calls fn with the quoted key and the encoded value of each member of obj,
// in place. The input is json.Marshal's (valid JSON); anything else is an error, never a
// wrong split.
func eachMember(obj []byte, fn func(key, val []byte)) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errNotObject
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		k, err := valueEnd(obj, i)
		if err != nil || obj[i] != '"' {
			return errNotObject
		}
		key := obj[i:k]
		i = skipSpace(obj, k)
		if i >= len(obj) || obj[i] != ':' {
			return errNotObject
		}
		i = skipSpace(obj, i+1)
		v, err := valueEnd(obj, i)
		if err != nil {
			return err
		}
		fn(key, obj[i:v])
		i = skipSpace(obj, v)
		if i >= len(obj) {
			break
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return nil
		default:
			return errNotObject
		}
	}
	return errNotObject
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// valueEnd is the index just past the JSON value that starts at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errNotObject
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
		return 0, errNotObject
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, err := valueEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errNotObject
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && !isSpace(b[j]) {
			j++
		}
		if j == i {
			return 0, errNotObject
		}
		return j, nil
	}
}
