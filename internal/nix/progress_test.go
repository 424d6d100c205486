package nix

import (
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
	if len(last.CopiedPaths) != 1 || !strings.HasSuffix(last.CopiedPaths[0], "-b2") {
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
