package console

import (
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/policy"
)

// view is what the template renders.
type view struct {
	Login   bool
	Error   string
	Done    string
	CSRF    string
	Now     time.Time
	Status  admin.Status
	AskOn   bool
	Pending []ask.Question
	Grants  []policy.Grant
	Rules   []string
	Chart   *chart
}

func (c *Console) view(r *http.Request) view {
	v := view{Now: c.now(), Status: c.cfg.Status(), Done: r.URL.Query().Get("done")}
	if c.cfg.Broker != nil && v.Status.Ask != nil {
		v.AskOn = true
		v.Pending = c.cfg.Broker.Pending()
		v.Grants = c.cfg.Broker.Grants()
	}
	if c.cfg.Rules != nil {
		v.Rules = c.cfg.Rules()
	}
	if c.cfg.Spend != nil {
		if s := c.cfg.Spend(); s != nil {
			v.Chart = newChart(*s, v.Now)
		}
	}
	return v
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, v view) {
	if !v.Login {
		v.CSRF = c.csrfToken(w, r)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	var b strings.Builder
	if err := page.Execute(&b, v); err != nil {
		c.log.Error("console page failed to render", "error", err)
		http.Error(w, "console failed to render", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// Chart geometry: a viewBox the browser scales to the page width.
// It is narrow so that labels stay legible on a phone.
const (
	chartW, chartH = 420.0, 190.0
	padL, padR     = 6.0, 6.0
	padT, padB     = 20.0, 22.0
	barH           = 12.0
	rowH           = 36.0
)

// chart is the spend chart, laid out in Go so the page needs no script.
type chart struct {
	Label                string // a sentence for screen readers and the caption
	W, H                 float64
	Line                 string // polyline points of spend over time
	Area                 string // polygon under it
	CapY, WarnY          float64
	X0, X1, Y0           float64
	StartLabel, EndLabel string
	CapLabel, SpentLabel string
	WarnLabel            string
	Models               []bar
	ModelsH              float64
	Over                 bool // spend at or past the cap
	Warn                 bool // past warn_at
}

type bar struct {
	Name, Label string
	Y, W        float64 // the bar's top and width
	TextY       float64 // baseline of the name and figures above it
}

func newChart(s Spend, now time.Time) *chart {
	c := &chart{W: chartW, H: chartH, X0: padL, X1: chartW - padR, Y0: chartH - padB}
	top := max(s.CapUSD, s.SpentUSD) * 1.05
	if top <= 0 {
		top = 1
	}
	end := s.End
	if end.IsZero() || end.Before(now) {
		end = now
	}
	start := s.Start
	if start.IsZero() || !start.Before(end) {
		start = end.Add(-time.Hour)
	}
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(end.Sub(start))
		return padL + min(max(f, 0), 1)*(c.X1-padL)
	}
	y := func(usd float64) float64 { return c.Y0 - usd/top*(c.Y0-padT) }
	pts := append([]Point{{At: start, USD: 0}}, s.Points...)
	pts = append(pts, Point{At: now, USD: s.SpentUSD})
	var line []string
	for _, p := range pts {
		line = append(line, fmt.Sprintf("%.1f,%.1f", x(p.At), y(p.USD)))
	}
	c.Line = strings.Join(line, " ")
	c.Area = fmt.Sprintf("%.1f,%.1f %s %.1f,%.1f", padL, c.Y0, c.Line, x(now), c.Y0)
	c.CapY, c.WarnY = y(s.CapUSD), y(s.CapUSD*s.WarnAt)
	c.StartLabel, c.EndLabel = start.UTC().Format("Jan 2"), end.UTC().Format("Jan 2")
	c.CapLabel = fmt.Sprintf("cap $%.2f", s.CapUSD)
	c.WarnLabel = fmt.Sprintf("warn %.0f%%", s.WarnAt*100)
	c.SpentLabel = fmt.Sprintf("$%.2f", s.SpentUSD)
	c.Over = s.CapUSD > 0 && s.SpentUSD >= s.CapUSD
	c.Warn = s.CapUSD > 0 && s.SpentUSD >= s.CapUSD*s.WarnAt
	c.Label = fmt.Sprintf("Spend $%.2f of the $%.2f cap this %s", s.SpentUSD, s.CapUSD, s.Period)
	models := append([]Model(nil), s.Models...)
	sort.Slice(models, func(i, j int) bool { return models[i].USD > models[j].USD })
	for i, m := range models {
		w := 0.0
		if s.CapUSD > 0 {
			w = min(m.USD/s.CapUSD, 1) * (chartW - padL - padR)
		}
		top := float64(i) * rowH
		c.Models = append(c.Models, bar{Name: m.Name, Label: fmt.Sprintf("$%.2f · %d calls", m.USD, m.Requests),
			Y: top + 17, W: max(w, 1), TextY: top + 13})
	}
	c.ModelsH = float64(len(models))*rowH + 4
	return c
}

var funcs = template.FuncMap{
	"target": func(host string, port uint16) string { return net.JoinHostPort(host, strconv.Itoa(int(port))) },
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"hm":    func(t time.Time) string { return t.UTC().Format("15:04Z") },
	"usd":   func(f float64) string { return fmt.Sprintf("$%.2f", f) },
	"pct":   func(a, b float64) string { return fmt.Sprintf("%.0f%%", a/b*100) },
	"minus": func(a, b float64) float64 { return a - b },
	"plus":  func(a, b float64) float64 { return a + b },
}
