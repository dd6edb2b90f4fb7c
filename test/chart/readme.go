package chart

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lastcall/lastcall/test/tools"
)

// READMEPath is the chart's README, relative to the repository root.
var READMEPath = filepath.Join("charts", "lastcall", "README.md")

// README is the chart's README as the pinned helm-docs (built on first
// use) writes it from values.yaml and README.md.gotmpl, values in the
// file's order.
func README(ctx context.Context) ([]byte, error) {
	bin, err := tools.Binary(ctx, tools.HelmDocs, "helm-docs")
	if err != nil {
		return nil, err
	}
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "--chart-search-root", filepath.Dir(dir), "--chart-to-generate", dir,
		"--sort-values-order", "file", "--dry-run", "--log-level", "warning")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm-docs: %w\n%s", err, strings.TrimSpace(stderr.String()))
	}
	if stderr.Len() > 0 { // a value it could not parse is only a warning
		return nil, fmt.Errorf("helm-docs: %s", strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
