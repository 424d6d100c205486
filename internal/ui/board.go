package ui

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Board draws several progress bars (github.com/schollz/progressbar/v3) on a
// terminal at once. progressbar has no multi-bar support, so every bar renders
// into its own buffer and the board redraws all lines together.
type Board struct {
	w     io.Writer
	color bool

	mu     sync.Mutex
	order  []string
	bars   map[string]*boardLine
	drawn  int // lines drawn last time
	paused bool
	stop   chan struct{}
	done   chan struct{}
}

type boardLine struct {
	bar *progressbar.ProgressBar
	out *lastLine
	// static text instead of a bar (e.g. a final state)
	text string
}

// lastLine keeps what a bar rendered last (progressbar starts each
// rendering with a carriage return).
type lastLine struct {
	mu   sync.Mutex
	line string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A rendering is "\r<line>" and may end with "\r"; keep the last
	// non-empty segment.
	parts := strings.Split(string(bytes.TrimRight(p, "\n")), "\r")
	for i := len(parts) - 1; i >= 0; i-- {
		s := strings.ReplaceAll(parts[i], "\x1b[J", "")
		if strings.TrimSpace(s) != "" {
			l.line = strings.TrimRight(s, " ")
			break
		}
	}
	return len(p), nil
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

// NewBoard starts redrawing on w every 100ms until Stop.
func NewBoard(w io.Writer, color bool) *Board {
	b := &Board{w: w, color: color, bars: map[string]*boardLine{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				b.draw()
				return
			case <-t.C:
				b.draw()
			}
		}
	}()
	return b
}

// Bar (re)creates the bar of key: max units, shown as bytes when bytes is true.
func (b *Board) Bar(key, desc string, max int64, bytes bool) {
	out := &lastLine{}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(0),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionEnableColorCodes(b.color),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
	}
	if max > 0 {
		opts = append(opts, progressbar.OptionShowCount())
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	if max <= 0 {
		max = -1 // spinner
	}
	bar := progressbar.NewOptions64(max, opts...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.bars[key]; ok && old.bar != nil {
		_ = old.bar.Exit()
	}
	if _, ok := b.bars[key]; !ok {
		b.order = append(b.order, key)
	}
	b.bars[key] = &boardLine{bar: bar, out: out}
}

// Set moves key's bar to n.
func (b *Board) Set(key string, n int64) {
	b.mu.Lock()
	l := b.bars[key]
	b.mu.Unlock()
	if l != nil && l.bar != nil {
		_ = l.bar.Set64(n)
	}
}

// Text replaces key's bar by a fixed line.
func (b *Board) Text(key, text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.bars[key]; ok && old.bar != nil {
		_ = old.bar.Exit()
	}
	if _, ok := b.bars[key]; !ok {
		b.order = append(b.order, key)
	}
	b.bars[key] = &boardLine{text: text}
}

func (b *Board) draw() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.paused {
		return
	}
	var buf strings.Builder
	if b.drawn > 0 {
		fmt.Fprintf(&buf, "\x1b[%dA", b.drawn)
	}
	for _, k := range b.order {
		l := b.bars[k]
		line := l.text
		if l.bar != nil {
			line = l.out.get()
		}
		buf.WriteString("\r\x1b[2K" + line + "\n")
	}
	b.drawn = len(b.order)
	io.WriteString(b.w, buf.String())
}

// Pause clears nothing but stops drawing (e.g. while a password is typed)
// until the returned function is called.
func (b *Board) Pause() func() {
	b.mu.Lock()
	b.paused = true
	b.drawn = 0 // the prompt moves the cursor: start drawing below it
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.paused = false
		b.mu.Unlock()
	}
}

// Stop draws a last time and stops.
func (b *Board) Stop() {
	select {
	case <-b.stop:
		return
	default:
	}
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.bars {
		if l.bar != nil {
			_ = l.bar.Exit()
		}
	}
}
