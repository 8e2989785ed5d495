package main

import (
	"encoding/json"
	"io"
	"strings"
	"text/tabwriter"
)

// view is a command's result in both output formats.
type view interface {
	writeTable(w io.Writer) error
	writeJSON(w io.Writer) error
}

// report is a view made of table rows and the value that JSON output
// encodes. Without columns the rows are key-value pairs with no header.
type report struct {
	columns []string
	rows    [][]string
	data    any
}

func (r report) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if r.columns != nil {
		io.WriteString(tw, strings.Join(r.columns, "\t")+"\n")
	}
	for _, row := range r.rows {
		io.WriteString(tw, strings.Join(row, "\t")+"\n")
	}
	return tw.Flush()
}

func (r report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.data)
}
