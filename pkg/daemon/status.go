package daemon

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/recommender/recommender/pkg/auditor"
)

//go:embed status.html.tmpl
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": auditor.ShortRevision,
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Truncate(time.Second).String() + " ago"
	},
	"dur": func(d time.Duration) string { return d.Truncate(time.Second).String() },
	"pct": func(f float64) string { return fmt.Sprintf("%.2f%%", f*100) },
	"port": func(e auditor.DeniedEdge) string {
		if e.Port == 0 {
			return e.Proto.String()
		}
		return fmt.Sprintf("%d/%s", e.Port, e.Proto)
	},
}).Parse(statusHTML))

// statusHandler serves the read-only status page (GET / on the metrics port). It renders into
// a buffer first, so a template error is a 500 and never half a page.
func (dm *Daemon) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		if err := statusTemplate.Execute(&buf, dm.audit.Status()); err != nil {
			dm.log.Error("render status page", "err", err)
			http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	})
}
