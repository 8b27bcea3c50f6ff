package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// GitRepo is a working copy whose commits are pushed to the sandbox's Git server: what a
// developer or a CI job does to release through Flux.
type GitRepo struct {
	// URL is what a GitRepository's spec.url points at.
	URL string
	// Dir is the working copy.
	Dir string
}

// NewGitRepo creates an empty working copy for repository name (branch main); its first
// Commit creates the repository on the server.
func (f *Flux) NewGitRepo(ctx context.Context, name string) (*GitRepo, error) {
	r := &GitRepo{URL: f.GitURL + "/" + name + ".git", Dir: filepath.Join(f.Dir, "work", name)}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create working copy: %w", err)
	}
	if _, err := r.git(ctx, "init", "--initial-branch=main"); err != nil {
		return nil, err
	}
	return r, nil
}

// Commit writes files (path relative to the repository -> content; nil removes the file),
// commits everything with message and pushes main. It returns the commit's hash.
func (r *GitRepo) Commit(ctx context.Context, message string, files map[string][]byte) (string, error) {
	for path, content := range files {
		p := filepath.Join(r.Dir, filepath.FromSlash(path))
		if content == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return "", err
		}
	}
	if _, err := r.git(ctx, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, "commit", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	return r.push(ctx)
}

// Revert commits the revert of the last commit (git revert HEAD) and pushes it.
func (r *GitRepo) Revert(ctx context.Context) (string, error) {
	if _, err := r.git(ctx, "revert", "--no-edit", "HEAD"); err != nil {
		return "", err
	}
	return r.push(ctx)
}

func (r *GitRepo) push(ctx context.Context) (string, error) {
	if _, err := r.git(ctx, "push", r.URL, "main"); err != nil {
		return "", err
	}
	sha, err := r.git(ctx, "rev-parse", "HEAD")
	return strings.TrimSpace(sha), err
}

// git runs git in the working copy with no user or system configuration, as a fixed
// author, never prompting.
func (r *GitRepo) git(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=coalmine sandbox", "GIT_AUTHOR_EMAIL=sandbox@coalmine.invalid",
		"GIT_COMMITTER_NAME=coalmine sandbox", "GIT_COMMITTER_EMAIL=sandbox@coalmine.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
