// Command linearizability checks a recorded history of etcd client operations with porcupine,
// the checker etcd's own robustness tests use, against a key-value model partitioned by key.
//
//	linearizability [-html FILE] [-timeout 60s] HISTORY.jsonl
//
// Each line of HISTORY is one operation as tests/it/support/history.rs records it: the client,
// the input (put, get, cas, delete of one key), the output, and the invocation and return times
// in nanoseconds. An operation whose outcome is unknown (it failed or timed out: it may or may
// not have taken effect) has no return time; it is modelled as possibly applied at any point
// after its invocation. Exit status: 0 linearizable, 1 not (the failing part drawn into FILE),
// 2 inconclusive within the timeout, 3 bad input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

type input struct {
	Op     string `json:"op"` // put, get, cas, delete
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`  // put, cas: the value written
	Expect string `json:"expect,omitempty"` // cas: the value compared
}

type output struct {
	Unknown   bool   `json:"unknown,omitempty"`
	Found     bool   `json:"found,omitempty"`     // get
	Value     string `json:"value,omitempty"`     // get
	Succeeded bool   `json:"succeeded,omitempty"` // cas
}

type record struct {
	Client int    `json:"client"`
	Input  input  `json:"input"`
	Output output `json:"output"`
	Call   int64  `json:"call"`
	Return *int64 `json:"return"`
}

// state of one key: absent, or its value.
type state struct {
	Present bool
	Value   string
}

func step(s, in, out interface{}) []interface{} {
	st, i, o := s.(state), in.(input), out.(output)
	written := state{Present: true, Value: i.Value}
	switch i.Op {
	case "put":
		if o.Unknown {
			return []interface{}{st, written}
		}
		return []interface{}{written}
	case "delete":
		if o.Unknown {
			return []interface{}{st, state{}}
		}
		return []interface{}{state{}}
	case "get":
		if o.Found == st.Present && (!o.Found || o.Value == st.Value) {
			return []interface{}{st}
		}
		return nil
	case "cas":
		matches := st.Present && st.Value == i.Expect
		switch {
		case o.Unknown && matches:
			return []interface{}{st, written}
		case o.Unknown:
			return []interface{}{st}
		case o.Succeeded && matches:
			return []interface{}{written}
		case !o.Succeeded && !matches:
			return []interface{}{st}
		}
		return nil
	}
	return nil
}

var model = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			key := op.Input.(input).Key
			byKey[key] = append(byKey[key], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() []interface{} { return []interface{}{state{}} },
	Step: step,
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(input), out.(output)
		result := "ok"
		switch {
		case o.Unknown:
			result = "unknown"
		case i.Op == "get" && !o.Found:
			result = "absent"
		case i.Op == "get":
			result = o.Value
		case i.Op == "cas":
			result = fmt.Sprint(o.Succeeded)
		}
		switch i.Op {
		case "put":
			return fmt.Sprintf("put(%s, %s) -> %s", i.Key, i.Value, result)
		case "cas":
			return fmt.Sprintf("cas(%s, %s -> %s) -> %s", i.Key, i.Expect, i.Value, result)
		}
		return fmt.Sprintf("%s(%s) -> %s", i.Op, i.Key, result)
	},
	DescribeState: func(s interface{}) string {
		if st := s.(state); st.Present {
			return st.Value
		}
		return "absent"
	},
}

func read(path string) ([]porcupine.Operation, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var records []record
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	var last int64
	for line := 1; scanner.Scan(); line++ {
		var r record
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if r.Input.Op != "put" && r.Input.Op != "get" && r.Input.Op != "cas" && r.Input.Op != "delete" {
			return nil, fmt.Errorf("%s:%d: unknown operation %q", path, line, r.Input.Op)
		}
		if r.Return != nil && *r.Return > last {
			last = *r.Return
		}
		if r.Call > last {
			last = r.Call
		}
		records = append(records, r)
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	ops := make([]porcupine.Operation, 0, len(records))
	for _, r := range records {
		ret := last + 1 // unknown: it may take effect any time after its call
		if r.Return != nil {
			ret = *r.Return
		} else {
			r.Output.Unknown = true
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.Input, Call: r.Call, Output: r.Output, Return: ret})
	}
	return ops, nil
}

func main() {
	html := flag.String("html", "", "where to draw the history when it is not linearizable")
	timeout := flag.Duration("timeout", time.Minute, "how long to search before calling the result inconclusive")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: linearizability [-html FILE] [-timeout D] HISTORY.jsonl")
		os.Exit(3)
	}
	ops, err := read(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	m := model.ToModel()
	result, info := porcupine.CheckOperationsVerbose(m, ops, *timeout)
	switch result {
	case porcupine.Ok:
		fmt.Printf("linearizable: %d operations\n", len(ops))
	case porcupine.Illegal:
		fmt.Printf("NOT linearizable: %d operations\n", len(ops))
		if *html != "" {
			if err := porcupine.VisualizePath(m, info, *html); err != nil {
				fmt.Fprintln(os.Stderr, err)
			} else {
				fmt.Printf("the history is drawn in %s\n", *html)
			}
		}
		os.Exit(1)
	default:
		fmt.Printf("inconclusive after %s: %d operations\n", *timeout, len(ops))
		os.Exit(2)
	}
}
