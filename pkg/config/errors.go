package config

import (
	"fmt"
	"strings"
)

// Problem is one invalid or missing setting.
type Problem struct {
	// Field is the setting's path, such as nodes[1].podCIDR. It is empty for
	// problems of the file as a whole, such as a YAML syntax error.
	Field string
	// Message names the invalid value and the fix.
	Message string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// Error lists every problem of an invalid configuration.
type Error struct {
	// File is the configuration file's path, when the configuration came from one.
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid config")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	if len(e.Problems) == 1 {
		b.WriteString(": ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	b.WriteString(":")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects the problems that validation finds.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}
