package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/metrics"
	"github.com/workos-emailer/workos-emailer/internal/sendlimit"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/postgres"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Implementations measured.
const (
	implOurs = "ours"
	// implPostgres is ours on the PostgreSQL store (store.driver: postgres), leading its lease.
	implPostgres = "postgres"
	implNaive    = "naive"
)

// runSpec is one run of one implementation against fakes that are already serving.
type runSpec struct {
	Scenario     string
	Impl         string
	WorkOSURL    string
	SESURL       string
	Dir          string // store directory; created fresh
	DSN          string // the PostgreSQL store's database (implPostgres)
	Concurrency  int
	PageSize     int
	PollInterval time.Duration
	// StopWhenIdle ends the run at the first empty page (a backlog); otherwise the run lasts
	// until the orchestrator stops it.
	StopWhenIdle bool
	// RateLimit, when > 0, is set on the pipeline's send-rate knob, if one exists.
	RateLimit  float64
	CPUProfile string
	MemProfile string
	Trace      string // runtime/trace output of the measured part
	// SampleMem samples memory during the run (every 250 ms; /proc/self/smaps every second).
	// Off for idle runs, whose CPU it would skew.
	SampleMem bool
}

// runResult is what the pipeline's process measured about itself.
type runResult struct {
	Impl         string
	RunStart     time.Time // when the pipeline started polling
	Elapsed      time.Duration
	Sent         int // emails the implementation saw accepted (naive); final records (ours)
	Mallocs      uint64
	AllocBytes   uint64
	CPU          time.Duration // user+system during the run
	PeakRSS      int64         // bytes, whole process lifetime (VmHWM)
	StoreBytes   int64
	Err          string
	GoMaxProcs   int
	StoreRecords int
	Mem          memPeaks
	Store        storeStats
}

// execute runs spec in this process, calling started once the pipeline starts and stopping
// when stop closes (or by itself at the first empty page with StopWhenIdle).
func execute(spec runSpec, started func(time.Time), stop <-chan struct{}) runResult {
	res := runResult{Impl: spec.Impl, GoMaxProcs: runtime.GOMAXPROCS(0)}
	var err error
	switch spec.Impl {
	case implOurs, implPostgres:
		err = runOurs(spec, &res, started, stop)
	case implNaive:
		err = runNaive(spec, &res, started, stop)
	default:
		err = fmt.Errorf("unknown implementation %q", spec.Impl)
	}
	if err != nil {
		res.Err = err.Error()
	}
	if res.PeakRSS == 0 {
		res.PeakRSS = peakRSS()
	}
	return res
}

// measure brackets the measured part of a run: allocations, CPU time, wall time, and the CPU
// profile if asked for.
type measure struct {
	ms0   runtime.MemStats
	cpu0  time.Duration
	start time.Time
	prof  *os.File
	trace *os.File
	mem   *memSampler
	done  bool
	// memProfile is where the allocation profile goes (it includes the run's setup, which
	// allocates little next to the run).
	memProfile string
}

func startMeasure(spec runSpec, storePath string) (*measure, error) {
	m := &measure{}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		m.prof = f
	}
	if spec.Trace != "" {
		f, err := os.Create(spec.Trace)
		if err != nil {
			return nil, err
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			return nil, err
		}
		m.trace = f
	}
	if spec.SampleMem {
		m.mem = startMemSampler(250*time.Millisecond, storePath)
	}
	m.memProfile = spec.MemProfile
	runtime.ReadMemStats(&m.ms0)
	m.cpu0 = cpuTime()
	m.start = time.Now()
	return m, nil
}

// stop ends the measurement; later calls do nothing.
func (m *measure) stop(res *runResult) {
	if m.done {
		return
	}
	m.done = true
	res.Elapsed = time.Since(m.start)
	res.CPU = cpuTime() - m.cpu0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.Mallocs = ms.Mallocs - m.ms0.Mallocs
	res.AllocBytes = ms.TotalAlloc - m.ms0.TotalAlloc
	res.RunStart = m.start
	if m.mem != nil {
		res.Mem = m.mem.Stop()
	}
	if m.prof != nil {
		pprof.StopCPUProfile()
		m.prof.Close()
	}
	if m.trace != nil {
		trace.Stop()
		m.trace.Close()
	}
	if m.memProfile != "" {
		if f, err := os.Create(m.memProfile); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
}

// stopContext is cancelled when stop closes.
func stopContext(stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// productionLogger encodes the daemon's JSON log lines at info level, as `run` does, but
// discards them: the encoding is part of the pipeline's cost, the write to journald is not
// measured.
func productionLogger() *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

func benchCredentials() credentials.StaticCredentialsProvider {
	return credentials.NewStaticCredentialsProvider("AKIDBENCH", "bench-secret", "")
}

var benchBrand = mailer.Brand{Name: "Bench", PrimaryColor: "#0f766e", SupportEmail: "support@bench.example"}

// runOurs wires the daemon's pipeline as `workos-emailer run` does: the durable bbolt store,
// workos-go through workosapi.New, aws-sdk-go-v2 SES v2 through mailer.NewSES, the
// built-in templates, the Prometheus observer and a JSON logger.
func runOurs(spec runSpec, res *runResult, started func(time.Time), stop <-chan struct{}) error {
	ctx, cancel := stopContext(stop)
	defer cancel()
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return err
	}
	dbPath := filepath.Join(spec.Dir, "state.db")
	opts := worker.Options{
		PageSize: spec.PageSize, PollInterval: spec.PollInterval, Concurrency: spec.Concurrency,
		StopWhenIdle: spec.StopWhenIdle, Retention: 45 * 24 * time.Hour,
		Observer: metrics.New(metrics.Options{Version: "bench", Kinds: kinds.Defaults()}),
	}
	var st store.Backend
	if spec.DSN != "" {
		pg, err := postgres.Open(ctx, spec.DSN, postgres.Options{Daemon: true, Kinds: kinds.Names()})
		if err != nil {
			return err
		}
		st, opts.Leadership = pg, worker.LeadershipOf(pg.Acquire)
	} else {
		bolt, err := store.Open(dbPath, store.Options{Kinds: kinds.Names()})
		if err != nil {
			return err
		}
		st = bolt
	}
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	sesOpts := mailer.SESOptions{Region: "us-east-1", Endpoint: spec.SESURL, From: benchFrom, Credentials: benchCredentials()}
	if spec.RateLimit > 0 {
		// What the daemon does with mailer.ses.max_send_rate (cmd/workos-emailer/sendlimit.go).
		opts.Limiter = sendlimit.New(sendlimit.Options{Rate: spec.RateLimit})
	}
	ses, err := mailer.NewSES(context.Background(), sesOpts)
	if err != nil {
		return err
	}
	if err := ses.CheckCredentials(context.Background()); err != nil {
		return err
	}
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: benchBrand})
	if err != nil {
		return err
	}
	w := worker.New(opts, workosapi.New(benchAPIKey, spec.WorkOSURL, 0, nil), st, ses, templates, productionLogger())

	m, err := startMeasure(spec, dbPath)
	if err != nil {
		return err
	}
	started(m.start)
	runErr := w.Run(ctx)
	m.stop(res)

	if stats, err := st.Stats(); err == nil {
		res.StoreRecords = stats.Records
		res.Sent = stats.ByState[store.Sent]
	}
	if err := st.Close(); err != nil && runErr == nil {
		runErr = err
	}
	st = nil
	// Before the store is read again below, which maps it in.
	res.PeakRSS = peakRSS()
	if spec.DSN != "" {
		return runErr // the database's size is the server's business
	}
	res.StoreBytes = fileSize(dbPath)
	if runErr == nil {
		res.Store, runErr = inspectStore(dbPath)
	}
	return runErr
}
