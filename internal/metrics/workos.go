package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/workos-emailer/workos-emailer/workosapi"
)

var _ workosapi.RequestObserver = (*Metrics)(nil)

// workosEndpoints are the endpoint labels of WorkOS requests: the list, the organization
// names, and a Get per object type.
var workosEndpoints = sync.OnceValue(func() []string {
	out := []string{"list_events", "get_organization", "create_passwordless_session"}
	for object := range workosapi.Objects {
		out = append(out, "get_"+object)
	}
	slices.Sort(out)
	return out
})

var workosResults = []string{"ok", "429", "4xx", "5xx", "no_answer"}

// WorkOSRequest implements workosapi.RequestObserver.
func (m *Metrics) WorkOSRequest(endpoint, result string) {
	m.workosRequests.WithLabelValues(oneOf(endpoint, workosEndpoints()), oneOf(result, workosResults)).Inc()
}

// BudgetState is what the metrics read from the WorkOS request budget at scrape time.
type BudgetState interface {
	Status() workosapi.BudgetStatus
}

// WatchBudget adds the gauges of the WorkOS request budget: the rate allowed now and the
// configured one, whether every call is paused after a 429, and the time paused in all.
func (m *Metrics) WatchBudget(b BudgetState) {
	f := factory{m.reg}
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "workos_request_budget",
		Help: "WorkOS requests per second allowed now: workos.max_requests_per_second, lower for a while after a 429 (0: unlimited).",
	}, func() float64 { return b.Status().Rate }))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "workos_request_budget_max",
		Help: "workos.max_requests_per_second (0: unlimited).",
	}, func() float64 { return b.Status().Max }))
	f.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "workos_paused",
		Help: "1 while every WorkOS call waits out a 429's Retry-After or a run of failed answers, else 0.",
	}, func() float64 {
		if b.Status().PausedUntil.IsZero() {
			return 0
		}
		return 1
	}))
	f.register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: namespace, Name: "workos_paused_seconds_total",
		Help: "Time every WorkOS call was held after 429s and failed answers.",
	}, func() float64 { return b.Status().Paused.Seconds() }))
}
