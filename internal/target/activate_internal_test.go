package target

import (
	"strings"
	"testing"
)

func TestUnitScriptGetsTheHistoryPath(t *testing.T) {
	s := unitScript()
	if strings.Contains(s, "@HISTORY_FILE@") || !strings.Contains(s, "history="+HistoryFile+"\n") {
		t.Fatalf("the unit's script does not name %s:\n%s", HistoryFile, s)
	}
}
