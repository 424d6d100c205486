module github.com/monibahmed/nixos-config

go 1.26.8

require (
	github.com/magefile/mage v1.17.2
	golang.org/x/term v0.48.0
)

require golang.org/x/sys v0.50.0 // indirect
