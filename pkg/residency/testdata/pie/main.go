// Command pie releases its own pages, then uses code and relocated data
// from all over its binary; built as a position-independent executable,
// whose relocated read-only data must survive the release.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"

	"github.com/lastcall/lastcall/pkg/residency"
)

type doc struct {
	Name  string            `json:"name"`
	Tags  map[string]string `json:"tags"`
	Items []int             `json:"items"`
}

var table = []func(int) int{func(i int) int { return i + 1 }, func(i int) int { return i * 2 }}

func main() {
	r, err := residency.Release()
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
	b, err := json.Marshal(doc{Name: "x", Tags: map[string]string{"a": "b"}, Items: []int{3, 1, 2}})
	if err != nil {
		panic(err)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil {
		panic(err)
	}
	sort.Ints(d.Items)
	n := 0
	for _, f := range table {
		n = f(n)
	}
	fmt.Printf("%d %s %v %s %d\n", r.Mappings, d.Name, d.Items, reflect.TypeOf(d).Field(1).Tag.Get("json"), n)
}
