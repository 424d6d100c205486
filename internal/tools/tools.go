//go:build tools

// Package tools records build-time dependencies so `go mod tidy` keeps them:
// the root magefile.go (excluded from builds by its `ignore` tag) imports
// github.com/magefile/mage/mage.
package tools

import (
	_ "github.com/magefile/mage/mage"
)
