package bench

import (
	"bufio"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// memPeaks samples what the resident memory is made of while a run lasts: anonymous memory
// (the Go heap and runtime) and file-backed pages (bbolt's read-only mmap of the store, which
// the kernel can reclaim). VmHWM is the peak of their sum.
type memPeaks struct {
	RSSAnon   int64 // bytes, peak RssAnon
	RSSFile   int64 // bytes, peak RssFile
	GoHeap    int64 // bytes, peak heap objects (live and not yet swept)
	GoRuntime int64 // bytes, peak memory the Go runtime holds from the OS (total - released)
	StoreMap  int64 // bytes, peak resident pages of the store's mmap (part of RSSFile)
}

type memSampler struct {
	store string // the store file's path, for its mapping in /proc/self/smaps
	mu    sync.Mutex
	peaks memPeaks
	stop  chan struct{}
	done  chan struct{}
}

func startMemSampler(every time.Duration, storePath string) *memSampler {
	s := &memSampler{store: storePath, stop: make(chan struct{}), done: make(chan struct{})}
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

func (s *memSampler) sample() {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(samples)
	val := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(samples[i].Value.Uint64())
	}
	anon, file := procStatusKB("RssAnon:")*1024, procStatusKB("RssFile:")*1024
	storeMap := mappedRSS(s.store)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.peaks
	p.RSSAnon, p.RSSFile = max(p.RSSAnon, anon), max(p.RSSFile, file)
	p.GoHeap = max(p.GoHeap, val(0))
	p.GoRuntime = max(p.GoRuntime, val(1)-val(2))
	p.StoreMap = max(p.StoreMap, storeMap)
}

// mappedRSS sums the resident size of this process's mappings of path, from /proc/self/smaps.
func mappedRSS(path string) int64 {
	if path == "" {
		return 0
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header: address perms offset dev inode [path]
			in = len(fields) >= 6 && fields[5] == path
			continue
		}
		if in && fields[0] == "Rss:" && len(fields) >= 2 {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			total += n * 1024
		}
	}
	return total
}

func (s *memSampler) Stop() memPeaks {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peaks
}

// storeStats is what the store file is made of.
type storeStats struct {
	FileBytes int64
	PageSize  int
	// HighWater is the size up to the highest page in use; the file beyond it is bbolt's
	// preallocation (it grows the file ahead in steps).
	HighWater int64
	FreePages int // free and pending pages below the high-water mark (copy-on-write leftovers)
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
	s := db.Stats()
	st.FreePages = s.FreePageN + s.PendingPageN
	return st, err
}
