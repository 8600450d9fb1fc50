package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Settings of a command come from, in order of precedence: its command line,
// the environment (TALLY_ and the flag's name in capitals with - as _), a
// config file, and the flag's default.

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return "TALLY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applySettings sets each flag of fs that the command line left alone from
// the environment, then from the config file at path (none if empty). The
// flag named skip (the one naming the file) is not read from the file.
// It returns the names of the flags it set, with where from.
func applySettings(fs *flag.FlagSet, getenv func(string) string, path, skip string) (map[string]string, error) {
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	file := map[string]fileSetting{}
	if path != "" {
		var err error
		if file, err = readConfigFile(path, fs, skip); err != nil {
			return nil, err
		}
	}
	from := map[string]string{}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
			from[f.Name] = envName(f.Name)
			return
		}
		if s, ok := file[f.Name]; ok {
			if err := fs.Set(f.Name, s.value); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s = %q: %w", path, s.line, f.Name, s.value, err))
			}
			from[f.Name] = path
		}
	})
	return from, errors.Join(errs...)
}

type fileSetting struct {
	value string
	line  int
}

// maxConfigFile bounds the config file read.
const maxConfigFile = 1 << 20

// readConfigFile reads "name = value" lines: names are flag names without
// dashes, values may be double-quoted (Go syntax), # starts a comment line.
func readConfigFile(path string, fs *flag.FlagSet, skip string) (map[string]fileSetting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	out := map[string]fileSetting{}
	sc := bufio.NewScanner(io.LimitReader(f, maxConfigFile))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want name = value, got %q", path, line, text)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if strings.HasPrefix(value, `"`) {
			if value, err = strconv.Unquote(value); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: bad quoted value: %w", path, line, name, err)
			}
		}
		if fs.Lookup(name) == nil || name == skip {
			return nil, fmt.Errorf("%s:%d: unknown setting %q (see the command's --help)", path, line, name)
		}
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s set again (first on line %d)", path, line, name, prev.line)
		}
		out[name] = fileSetting{value: value, line: line}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read config file %s: %w", path, err)
	}
	return out, nil
}

// printFlags writes every flag of fs with its type, meaning, default and
// environment variable, for --help.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(interface{ IsBoolFlag() bool }); ok {
			typ = ""
		}
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s\n      default: %s; env %s\n", head, usage, showDefault(f), envName(f.Name))
	})
}

// showDefault renders a flag's default for humans: durations without
// trailing zero units (24h, not 24h0m0s), empty as "none".
func showDefault(f *flag.Flag) string {
	if f.DefValue == "" {
		return "none"
	}
	if d, err := time.ParseDuration(f.DefValue); err == nil && strings.HasSuffix(f.DefValue, "s") {
		return shortDuration(d)
	}
	if _, ok := f.Value.(interface{ IsBoolFlag() bool }); ok {
		return f.DefValue
	}
	if _, err := strconv.ParseFloat(f.DefValue, 64); err == nil {
		return f.DefValue
	}
	return strconv.Quote(f.DefValue)
}

func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
