package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// screen is a small terminal emulator: enough of the VT100 control
// sequences for Bubble Tea's renderer (cursor moves, erasing, the
// alternate screen) to tell what a terminal would show. Colors and modes
// are ignored.
type screen struct {
	mu       sync.Mutex
	rows     [][]rune
	row, col int
	pending  []byte        // an incomplete escape sequence or UTF-8 rune
	changed  chan struct{} // closed and replaced at each write
	// reply, when set, gets the answers a terminal sends to a query of
	// the cursor's position, which programs use to tell that a terminal
	// answers (termenv waits seconds for one otherwise).
	reply io.Writer
}

func newScreen(rows, cols int) *screen {
	s := &screen{changed: make(chan struct{})}
	s.resize(rows, cols)
	return s
}

// resize sets the size, keeping what fits.
func (s *screen) resize(rows, cols int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	grid := make([][]rune, rows)
	for r := range grid {
		grid[r] = []rune(strings.Repeat(" ", cols))
		if r < len(s.rows) {
			copy(grid[r], s.rows[r])
		}
	}
	s.rows = grid
	s.row, s.col = min(s.row, rows-1), min(s.col, cols-1)
}

// Write interprets p.
func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := append(s.pending, p...)
	s.pending = nil
	for len(data) > 0 {
		n := s.step(data)
		if n == 0 { // incomplete: wait for more
			s.pending = append([]byte(nil), data...)
			break
		}
		data = data[n:]
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

// step interprets the start of data and returns how many bytes it used,
// 0 when data ends inside a sequence.
func (s *screen) step(data []byte) int {
	switch c := data[0]; {
	case c == '\r':
		s.col = 0
		return 1
	case c == '\n':
		s.lineFeed()
		return 1
	case c == '\b':
		s.col = max(s.col-1, 0)
		return 1
	case c == 0x1b:
		return s.escape(data)
	case c < 0x20 || c == 0x7f:
		return 1
	}
	if !utf8.FullRune(data) {
		return 0
	}
	r, n := utf8.DecodeRune(data)
	if s.col < len(s.rows[s.row]) {
		s.rows[s.row][s.col] = r
	}
	s.col++
	return n
}

func (s *screen) lineFeed() {
	if s.row < len(s.rows)-1 {
		s.row++
		return
	}
	cols := len(s.rows[0])
	s.rows = append(s.rows[1:], []rune(strings.Repeat(" ", cols)))
}

// escape interprets an escape sequence: CSI (ESC [), OSC (ESC ], up to
// BEL or ESC \), or a two-byte one.
func (s *screen) escape(data []byte) int {
	if len(data) < 2 {
		return 0
	}
	switch data[1] {
	case '[':
		for i := 2; i < len(data); i++ {
			if data[i] >= 0x40 && data[i] <= 0x7e {
				s.csi(string(data[2:i]), data[i])
				return i + 1
			}
		}
		return 0
	case ']':
		for i := 2; i < len(data); i++ {
			if data[i] == 0x07 {
				return i + 1
			}
			if data[i] == 0x1b && i+1 < len(data) && data[i+1] == '\\' {
				return i + 2
			}
		}
		return 0
	}
	return 2
}

func (s *screen) csi(params string, final byte) {
	if strings.HasPrefix(params, "?") || strings.HasPrefix(params, ">") {
		return // private modes: cursor visibility, alternate screen, mouse...
	}
	var n []int
	for _, p := range strings.Split(params, ";") {
		v, _ := strconv.Atoi(p)
		n = append(n, v)
	}
	arg := func(i, def int) int {
		if i < len(n) && n[i] > 0 {
			return n[i]
		}
		return def
	}
	rows, cols := len(s.rows), len(s.rows[0])
	switch final {
	case 'n':
		if params == "6" && s.reply != nil {
			fmt.Fprintf(s.reply, "\x1b[%d;%dR", s.row+1, s.col+1)
		}
	case 'A':
		s.row = max(s.row-arg(0, 1), 0)
	case 'B':
		s.row = min(s.row+arg(0, 1), rows-1)
	case 'C':
		s.col = min(s.col+arg(0, 1), cols-1)
	case 'D':
		s.col = max(s.col-arg(0, 1), 0)
	case 'G':
		s.col = min(arg(0, 1), cols) - 1
	case 'H', 'f':
		s.row, s.col = min(arg(0, 1), rows)-1, min(arg(1, 1), cols)-1
	case 'J':
		switch arg(0, 0) {
		case 0:
			s.clear(s.row, s.col, cols)
			for r := s.row + 1; r < rows; r++ {
				s.clear(r, 0, cols)
			}
		case 2, 3:
			for r := range rows {
				s.clear(r, 0, cols)
			}
		}
	case 'K':
		switch arg(0, 0) {
		case 0:
			s.clear(s.row, s.col, cols)
		case 1:
			s.clear(s.row, 0, s.col+1)
		case 2:
			s.clear(s.row, 0, cols)
		}
	}
}

func (s *screen) clear(row, from, to int) {
	for c := from; c < to && c < len(s.rows[row]); c++ {
		s.rows[row][c] = ' '
	}
}

// lines returns the screen's text, one string per row, trailing blanks
// trimmed, and a channel closed at the next write.
func (s *screen) lines() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.rows))
	for r, row := range s.rows {
		out[r] = strings.TrimRight(string(row), " ")
	}
	return out, s.changed
}

// String is the screen as text, blank rows at the end dropped.
func (s *screen) String() string {
	lines, _ := s.lines()
	return strings.TrimRight(strings.Join(lines, "\n"), "\n ")
}

// await waits until ok holds for the screen's lines, and returns them.
func (s *screen) await(t *testing.T, timeout time.Duration, what string, ok func(lines []string) bool) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		lines, changed := s.lines()
		if ok(lines) {
			return lines
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the screen did not show %s within %v; it shows:\n%s", what, timeout, s)
		}
	}
}
