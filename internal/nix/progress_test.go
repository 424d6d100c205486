package nix

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// Lines as Nix 2.8 prints them (captured on this machine).
const buildLog = `@nix {"action":"start","id":1,"level":0,"text":"","type":102}
@nix {"action":"start","id":2,"level":0,"text":"","type":104}
@nix {"action":"start","id":3,"level":0,"text":"","type":103}
@nix {"action":"result","fields":[0,1,0,0],"id":2,"type":105}
@nix {"action":"result","fields":[0,0,0,0],"id":3,"type":105}
@nix {"action":"start","fields":["/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-lj.drv","",1,1],"id":4,"level":3,"text":"building '/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-lj.drv'","type":105}
@nix {"action":"result","fields":["building"],"id":4,"type":101}
@nix {"action":"result","fields":["sh: 1: head: not found"],"id":4,"type":101}
@nix {"action":"result","fields":[0,1,1,0],"id":2,"type":105}
@nix {"action":"stop","id":4}
@nix {"action":"result","fields":[1,1,0,0],"id":2,"type":105}
@nix {"action":"msg","column":5,"file":"/nix/store/wn3291ahkkp1fxc5y8dzhjkqf65fiawk-source/targets/lab-server/configuration.nix","level":0,"line":12,"msg":"\u001b[31;1merror:\u001b[0m cannot add \u001b[35;1ma string\u001b[0m to an integer\n\n       at somewhere","raw_msg":"cannot add \u001b[35;1ma string\u001b[0m to an integer"}
@nix {"action":"start","fields":["/nix/store/6j9xjka5ig3241b8859hvqskwqbnii9b-b2","local","ssh-ng://u@h"],"id":5,"level":3,"text":"copying path","type":100}
@nix {"action":"stop","id":5}
ssh: connect to host 10.0.0.1 port 22: Connection refused
`

func TestLogParser(t *testing.T) {
	var seen []Progress
	p := &LogParser{OnProgress: func(pr Progress) { seen = append(seen, pr) }}
	// Feed in odd-sized chunks: lines may be split across writes.
	for i := 0; i < len(buildLog); i += 37 {
		end := i + 37
		if end > len(buildLog) {
			end = len(buildLog)
		}
		p.Write([]byte(buildLog[i:end]))
	}
	last := seen[len(seen)-1]
	if last.BuildsDone != 1 || last.BuildsExpected != 1 {
		t.Errorf("builds: %+v", last)
	}
	if last.Copied != 1 || len(last.CopiedPaths) != 1 || !strings.HasSuffix(last.CopiedPaths[0], "-b2") {
		t.Errorf("copied: %v", last.CopiedPaths)
	}
	log := p.BuildLog("/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-lj.drv")
	if len(log) != 2 || log[1] != "sh: 1: head: not found" {
		t.Errorf("build log: %v", log)
	}
	errs := p.Errors()
	if len(errs) != 1 || errs[0].Error() != "/nix/store/wn3291ahkkp1fxc5y8dzhjkqf65fiawk-source/targets/lab-server/configuration.nix:12:5: cannot add a string to an integer" {
		t.Errorf("errors: %v", errs)
	}
	if pl := p.Plain(); len(pl) != 1 || !strings.Contains(pl[0], "Connection refused") {
		t.Errorf("plain: %v", pl)
	}
}

// What a remote Nix sends is untrusted: the parser keeps bounded state.
func TestLogParserBounds(t *testing.T) {
	p := &LogParser{}
	for i := 0; i < 1000; i++ {
		p.Write([]byte("plain line\n"))
		p.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error: x"}` + "\n"))
	}
	p.Write([]byte(strings.Repeat("x", 3<<20)))
	p.Write([]byte("\n"))
	if len(p.Plain()) > maxKept || len(p.Errors()) > maxKept {
		t.Fatalf("kept %d plain lines, %d errors", len(p.Plain()), len(p.Errors()))
	}
	for _, l := range p.Plain() {
		if len(l) > maxLine {
			t.Fatalf("a line of %d bytes kept", len(l))
		}
	}
	p.mu.Lock()
	n := len(p.buf)
	p.mu.Unlock()
	if n > maxLine {
		t.Fatalf("buffer of %d bytes", n)
	}
}

// A remote Nix that floods the parser (a million copy events, lines and errors
// of a MiB each, build logs of many derivations) costs the deployer little
// memory, and what is kept still reports the failure.
func TestLogParserMemory(t *testing.T) {
	var last Progress
	calls := 0
	p := &LogParser{OnProgress: func(pr Progress) { last = pr; calls++ }}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	const copies = 500000 // a million events
	var chunk bytes.Buffer
	for i := 0; i < copies; i++ {
		fmt.Fprintf(&chunk, `@nix {"action":"start","fields":["/nix/store/6j9xjka5ig3241b8859hvqskwqbnii9b-p%d","local","ssh-ng://u@h"],"id":%d,"level":3,"text":"copying path","type":100}`+"\n", i, i+10)
		fmt.Fprintf(&chunk, `@nix {"action":"stop","id":%d}`+"\n", i+10)
		if chunk.Len() > 64<<10 {
			p.Write(chunk.Bytes())
			chunk.Reset()
		}
	}
	p.Write(chunk.Bytes())
	big := strings.Repeat("x", 1<<20)
	// Lines, errors and log lines of about a MiB, build logs of 300
	// derivations (a MiB a line for the last few: parsing JSON of a MiB
	// takes time).
	for i := 0; i < 300; i++ {
		p.Write([]byte(big[:len(big)-1] + "\n"))
		size := 100
		if i >= 290 {
			size = len(big) - 200
		}
		msg, _ := json.Marshal(fmt.Sprintf("error %d: %s", i, big[:size]))
		fmt.Fprintf(p, `@nix {"action":"msg","level":0,"msg":%s}`+"\n", msg)
		drv := fmt.Sprintf("/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-d%d.drv", i)
		fmt.Fprintf(p, `@nix {"action":"start","fields":["%s","",1,1],"id":%d,"level":3,"text":"building","type":105}`+"\n", drv, 5000000+i)
		for k := 0; k < 12; k++ {
			l, _ := json.Marshal(fmt.Sprintf("log %d: %s", k, big[:size]))
			fmt.Fprintf(p, `@nix {"action":"result","fields":[%s],"id":%d,"type":101}`+"\n", l, 5000000+i)
		}
		fmt.Fprintf(p, `@nix {"action":"stop","id":%d}`+"\n", 5000000+i)
	}
	p.Write([]byte(strings.Repeat("y", 3<<20) + " tail of an overlong line\nlast line\n"))
	p.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error: builder for '/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-d299.drv' failed with exit code 1"}` + "\n"))

	big = ""
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 8<<20 {
		t.Errorf("the parser holds %d MiB after the flood", grown>>20)
	}
	if last.Copied != copies || len(last.CopiedPaths) != maxRecentCopies || !strings.HasSuffix(last.CopiedPaths[maxRecentCopies-1], fmt.Sprintf("-p%d", copies-1)) {
		t.Errorf("copied %d, last %d paths ending %v", last.Copied, len(last.CopiedPaths), last.CopiedPaths[len(last.CopiedPaths)-1:])
	}
	errs := p.Errors()
	if len(errs) == 0 || !strings.Contains(errs[len(errs)-1].Message, "d299.drv' failed with exit code 1") {
		t.Fatalf("the last error is lost: %d errors", len(errs))
	}
	if prev := errs[len(errs)-2]; !strings.HasPrefix(prev.Message, "error 299: xxx") || !strings.HasSuffix(prev.Message, truncatedMark) || len(prev.Message) > maxKeptLine {
		t.Errorf("an error of a MiB is kept as %d bytes ending %q", len(prev.Message), prev.Message[max(0, len(prev.Message)-30):])
	}
	log := p.BuildLog("/nix/store/7ww41kl7pj1rshl0p0ijw93hwsmr0w3m-d299.drv")
	if len(log) != maxLogLines || !strings.HasPrefix(log[len(log)-1], "log 11: xxx") || !strings.HasSuffix(log[len(log)-1], truncatedMark) {
		t.Errorf("the failed derivation's log tail: %d lines", len(log))
	}
	plain := p.Plain()
	if len(plain) < 2 || plain[len(plain)-1] != "last line" || !strings.HasPrefix(plain[len(plain)-2], "yyy") || len(plain[len(plain)-2]) > maxKeptLine {
		t.Errorf("plain lines: %d, the last two not the overlong line's start and %q", len(plain), "last line")
	}
	for _, l := range plain {
		if strings.Contains(l, "tail of an overlong line") {
			t.Errorf("the rest of an overlong line became a line of its own")
		}
	}
}

// A message without its short form (no raw_msg, as for failed assertions)
// reaches the user whole, without Nix's trace.
func TestLogParserKeepsMultiLineMessages(t *testing.T) {
	p := &LogParser{}
	p.Write([]byte(`@nix {"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m\n       … while evaluating the attribute 'config.system.build.toplevel'\n\n       \u001b[31;1merror:\u001b[0m\n       Failed assertions:\n       - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.\n       - The ‘fileSystems’ option does not specify your root file system."}` + "\n"))
	errs := p.Errors()
	want := "Failed assertions: - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable. - The ‘fileSystems’ option does not specify your root file system."
	if len(errs) != 1 || errs[0].Message != want {
		t.Fatalf("errors: %q", errs)
	}
}
