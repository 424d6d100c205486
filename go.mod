module github.com/monibahmed/nixos-config

go 1.26.8

require (
	github.com/kevinburke/ssh_config v1.6.0
	github.com/magefile/mage v1.17.2
	github.com/rivo/uniseg v0.4.7
	github.com/schollz/progressbar/v3 v3.19.1
	github.com/skeema/knownhosts v1.3.3
	golang.org/x/crypto v0.59.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
