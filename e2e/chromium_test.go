package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// A headless Chromium driven through the DevTools protocol (CDP) over its websocket: the
// few commands a page test needs (navigate, evaluate, screenshot) and the console errors
// and uncaught exceptions the page produced. Chromium is Debian's `chromium` package
// (`make chromium` installs it; COALMINE_CHROMIUM names another binary).

// chromiumBinary finds Chromium, or fails the test saying how to get it.
func chromiumBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COALMINE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: `make chromium` installs Debian's chromium (apt-get install chromium), or set COALMINE_CHROMIUM")
	return ""
}

// browser is one headless Chromium process and a CDP session on its first page.
type browser struct {
	t    *testing.T
	cmd  *exec.Cmd
	ws   *websocket.Conn
	next atomic.Int64

	mu       sync.Mutex
	pending  map[int64]chan cdpMessage
	events   map[string][]chan json.RawMessage
	problems []string // console errors and exceptions, as the page reported them
}

type cdpMessage struct {
	ID     int64           `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

var devtoolsLine = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts headless Chromium with a fresh profile and attaches to its page.
func startBrowser(t *testing.T, ctx context.Context, width, height int) *browser {
	t.Helper()
	bin := chromiumBinary(t)
	profile := t.TempDir()
	args := []string{
		"--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-background-networking", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
		"--user-data-dir=" + profile, fmt.Sprintf("--window-size=%d,%d", width, height), "about:blank",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox") // Chromium refuses to run as root with its sandbox
	}
	cmd := exec.Command(bin, args...)
	// Its own process group, so closing ends the renderer and GPU processes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(profile, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	b := &browser{t: t, cmd: cmd, pending: map[int64]chan cdpMessage{}, events: map[string][]chan json.RawMessage{}}
	t.Cleanup(b.close)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			if m := devtoolsLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		logFile.Close()
	}()
	var browserWS string
	select {
	case browserWS = <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("Chromium printed no DevTools address within 30s (log: %s)", logFile.Name())
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	// The page target: the about:blank tab Chromium opened.
	base := "http://" + strings.Split(strings.TrimPrefix(browserWS, "ws://"), "/")[0]
	var pageWS string
	waitFor(t, 10*time.Second, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/json/list", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var targets []struct {
			Type string `json:"type"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
			return false, err
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				pageWS = tg.WS
				return true, nil
			}
		}
		return false, errors.New("no page target yet")
	})
	if b.ws, err = websocket.Dial(pageWS, "", "http://127.0.0.1/"); err != nil {
		t.Fatalf("connect to the page's DevTools: %v", err)
	}
	b.ws.MaxPayloadBytes = 64 << 20 // screenshots
	go b.read()
	b.on("Runtime.consoleAPICalled", func(p json.RawMessage) {
		var ev struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		_ = json.Unmarshal(p, &ev)
		if ev.Type == "error" || ev.Type == "assert" {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, fmt.Sprint(a.Value)+a.Description)
			}
			b.problem("console." + ev.Type + ": " + strings.Join(parts, " "))
		}
	})
	b.on("Runtime.exceptionThrown", func(p json.RawMessage) {
		var ev struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		_ = json.Unmarshal(p, &ev)
		b.problem("uncaught exception: " + ev.Details.Text + " " + ev.Details.Exception.Description)
	})
	b.on("Log.entryAdded", func(p json.RawMessage) {
		var ev struct {
			Entry struct {
				Level  string `json:"level"`
				Source string `json:"source"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		_ = json.Unmarshal(p, &ev)
		if ev.Entry.Level == "error" {
			b.problem(fmt.Sprintf("%s error: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	})
	for _, domain := range []string{"Page", "Runtime", "Log"} {
		b.call(ctx, domain+".enable", nil, nil)
	}
	b.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

func (b *browser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, s)
}

// consoleErrors are the console errors, failed loads and uncaught exceptions so far.
func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// on calls f with the parameters of every event method, in order.
func (b *browser) on(method string, f func(json.RawMessage)) {
	ch := make(chan json.RawMessage, 256)
	b.mu.Lock()
	b.events[method] = append(b.events[method], ch)
	b.mu.Unlock()
	go func() {
		for p := range ch {
			f(p)
		}
	}()
}

func (b *browser) read() {
	for {
		var msg cdpMessage
		if err := websocket.JSON.Receive(b.ws, &msg); err != nil {
			b.mu.Lock()
			for _, ch := range b.pending {
				close(ch)
			}
			b.pending = map[int64]chan cdpMessage{}
			for _, chs := range b.events {
				for _, ch := range chs {
					close(ch)
				}
			}
			b.events = map[string][]chan json.RawMessage{}
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		if msg.ID != 0 {
			if ch, ok := b.pending[msg.ID]; ok {
				ch <- msg
				delete(b.pending, msg.ID)
			}
		} else {
			for _, ch := range b.events[msg.Method] {
				select {
				case ch <- msg.Params:
				default: // a slow listener loses events rather than stalling the session
				}
			}
		}
		b.mu.Unlock()
	}
}

// call sends one CDP command and decodes its result into out (may be nil).
func (b *browser) call(ctx context.Context, method string, params any, out any) {
	b.t.Helper()
	if err := b.tryCall(ctx, method, params, out); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
}

func (b *browser) tryCall(ctx context.Context, method string, params any, out any) error {
	id := b.next.Add(1)
	ch := make(chan cdpMessage, 1)
	b.mu.Lock()
	b.pending[id] = ch
	b.mu.Unlock()
	p, _ := json.Marshal(params)
	if params == nil {
		p = []byte("{}")
	}
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": json.RawMessage(p)}); err != nil {
		return err
	}
	select {
	case msg, ok := <-ch:
		if !ok {
			return errors.New("DevTools connection closed")
		}
		if msg.Error != nil {
			return fmt.Errorf("%s (%d)", msg.Error.Message, msg.Error.Code)
		}
		if out != nil {
			return json.Unmarshal(msg.Result, out)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("no answer within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// navigate loads url and waits for its load event.
func (b *browser) navigate(ctx context.Context, url string) {
	b.t.Helper()
	loaded := make(chan struct{}, 1)
	b.on("Page.loadEventFired", func(json.RawMessage) {
		select {
		case loaded <- struct{}{}:
		default:
		}
	})
	var res struct {
		ErrorText string `json:"errorText"`
	}
	b.call(ctx, "Page.navigate", map[string]any{"url": url}, &res)
	if res.ErrorText != "" {
		b.t.Fatalf("navigate to %s: %s", url, res.ErrorText)
	}
	select {
	case <-loaded:
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s did not load within 30s", url)
	}
}

// eval evaluates a JavaScript expression in the page and decodes its (JSON) value.
func (b *browser) eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := b.tryCall(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res); err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("evaluate %q: %s", expr, res.ExceptionDetails.Text)
	}
	return json.Unmarshal(res.Result.Value, out)
}

// screenshot saves the whole page as a PNG.
func (b *browser) screenshot(ctx context.Context, path string) {
	b.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	b.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &res)
	data, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		b.t.Fatalf("decode screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) close() {
	if b.ws != nil {
		_ = b.ws.Close()
	}
	if b.cmd.Process != nil {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		_ = b.cmd.Wait()
	}
}
