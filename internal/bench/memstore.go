package bench

import (
	"bytes"
	"io"
	"os"
	"runtime/metrics"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// memPeaks samples what the resident memory is made of while a run lasts: anonymous memory
// (the Go heap and runtime) and file-backed pages (the binary's code, and bbolt's read-only
// mmap of the store, which the kernel can reclaim). VmHWM is the peak of their sum.
type memPeaks struct {
	RSSAnon   int64 // bytes, peak RssAnon
	RSSFile   int64 // bytes, peak RssFile
	StoreMap  int64 // bytes, peak resident pages of the store's mmap (part of RSSFile)
	GoHeap    int64 // bytes, peak heap objects (live and not yet swept)
	GoRuntime int64 // bytes, peak memory the Go runtime holds from the OS (total - released)
	Samples   int
}

// smapsEvery: the store's mapping is measured at every smapsEvery-th sample only.
const smapsEvery = 4

// memSampler reads /proc/self/status and /proc/self/smaps through files it keeps open and
// buffers it reuses, so that sampling allocates (almost) nothing: its allocations and CPU
// would otherwise count as the pipeline's.
type memSampler struct {
	status, smaps *os.File
	store         []byte // the store's path, as it appears in smaps
	buf           []byte
	samples       []metrics.Sample

	mu       sync.Mutex
	peaks    memPeaks
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func startMemSampler(every time.Duration, storePath string) *memSampler {
	s := &memSampler{store: []byte(storePath), buf: make([]byte, 256<<10),
		stop: make(chan struct{}), done: make(chan struct{}),
		samples: []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/total:bytes"},
			{Name: "/memory/classes/heap/released:bytes"},
		}}
	s.status, _ = os.Open("/proc/self/status")
	s.smaps, _ = os.Open("/proc/self/smaps")
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-t.C:
			case <-s.stop:
				s.sample()
				return
			}
		}
	}()
	return s
}

// read fills s.buf with f's current content.
func (s *memSampler) read(f *os.File) []byte {
	if f == nil {
		return nil
	}
	for {
		n, err := f.ReadAt(s.buf, 0)
		if err != nil && err != io.EOF {
			return nil
		}
		if n < len(s.buf) {
			return s.buf[:n]
		}
		s.buf = make([]byte, 2*len(s.buf))
	}
}

// sample takes one sample; the buffers it reuses are guarded by s.mu too.
func (s *memSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	metrics.Read(s.samples)
	val := func(i int) int64 {
		if s.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s.samples[i].Value.Uint64())
	}
	status := s.read(s.status)
	anon, file := kbField(status, []byte("RssAnon:")), kbField(status, []byte("RssFile:"))
	var storeMap int64
	if s.peaks.Samples%smapsEvery == 0 { // smaps costs ~0.5 ms of kernel time to read
		storeMap = mappedRSS(s.read(s.smaps), s.store)
	}
	p := &s.peaks
	p.Samples++
	p.RSSAnon, p.RSSFile = max(p.RSSAnon, anon), max(p.RSSFile, file)
	p.GoHeap = max(p.GoHeap, val(0))
	p.GoRuntime = max(p.GoRuntime, val(1)-val(2))
	p.StoreMap = max(p.StoreMap, storeMap)
}

// Stop ends sampling (once; later calls only return the peaks) and returns the peaks.
func (s *memSampler) Stop() memPeaks {
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.done
		for _, f := range []*os.File{s.status, s.smaps} {
			if f != nil {
				f.Close()
			}
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peaks
}

// kbField returns the value of a "Name:   123 kB" line of text, in bytes.
func kbField(text, name []byte) int64 {
	i := bytes.Index(text, name)
	if i < 0 {
		return 0
	}
	return leadingNumber(text[i+len(name):]) * 1024
}

// leadingNumber parses the first decimal number in b, skipping spaces and tabs.
func leadingNumber(b []byte) int64 {
	var n int64
	started := false
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			n, started = n*10+int64(c-'0'), true
		case started || c != ' ' && c != '\t':
			return n
		}
	}
	return n
}

// mappedRSS sums the "Rss:" of the mappings of path in smaps text.
func mappedRSS(smaps, path []byte) int64 {
	if len(path) == 0 {
		return 0
	}
	var total int64
	in := false
	for len(smaps) > 0 {
		line := smaps
		if i := bytes.IndexByte(smaps, '\n'); i >= 0 {
			line, smaps = smaps[:i], smaps[i+1:]
		} else {
			smaps = nil
		}
		// A mapping's header starts with its address range (hex digits and '-'); the fields
		// after it start with a capitalized name and a colon.
		if len(line) > 0 && (line[0] >= '0' && line[0] <= '9' || line[0] >= 'a' && line[0] <= 'f') {
			in = bytes.HasSuffix(line, path)
			continue
		}
		if in && bytes.HasPrefix(line, []byte("Rss:")) {
			total += leadingNumber(line[len("Rss:"):]) * 1024
		}
	}
	return total
}

// storeStats is what the store file is made of.
type storeStats struct {
	FileBytes int64
	PageSize  int
	// HighWater is the size up to the highest page in use; the file beyond it is bbolt's
	// preallocation (it grows the file ahead in steps).
	HighWater int64
	// Records in the deliveries bucket and their keys and values (JSON) in bytes.
	Records     int
	RecordBytes int64
	// LeafInuse and LeafAlloc over all buckets: bytes of B+tree leaf pages used and allocated.
	LeafInuse, LeafAlloc     int64
	BranchInuse, BranchAlloc int64
}

// inspectStore opens a closed store read-only and measures it.
func inspectStore(path string) (storeStats, error) {
	st := storeStats{FileBytes: fileSize(path)}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return st, err
	}
	defer db.Close()
	st.PageSize = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		st.HighWater = tx.Size()
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			bs := b.Stats()
			st.LeafInuse += int64(bs.LeafInuse)
			st.LeafAlloc += int64(bs.LeafAlloc)
			st.BranchInuse += int64(bs.BranchInuse)
			st.BranchAlloc += int64(bs.BranchAlloc)
			if string(name) == "deliveries" {
				return b.ForEach(func(k, v []byte) error {
					st.Records++
					st.RecordBytes += int64(len(k) + len(v))
					return nil
				})
			}
			return nil
		})
	})
	return st, err
}
