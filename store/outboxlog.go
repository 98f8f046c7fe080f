package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/tetherd/tether/platform/atomicfile"
)

// The outbox's write-ahead log: a file beside the state file that makes a
// group commit one pwrite and one fdatasync instead of a bbolt transaction
// (two fdatasyncs and several page writes). Messages in it are also held in
// memory, and moved into bbolt in one transaction when it fills, when the
// outbox has been idle a while and at Close ("drained"); every sequence
// number in bbolt is then below every one in the log.
//
// Layout (all integers big-endian):
//
//	0     header slot 0 ┐ magic "tetherOL", version(4), generation(8),
//	512   header slot 1 ┘ CRC32C of the 20 bytes before it(4)
//	4096  frames, back to back, up to the end of the file:
//	      length(4) CRC32C(4) generation(8) number(8) body(length)
//	      body: 1 seq(8) record   a message, record as in bucket outbox
//	            2 seq(8)...       acknowledgements
//
// The CRC covers generation, number and body. The file is created at its
// full size, zeroed, once (written to a temporary name, fsync'd, renamed,
// its directory fsync'd), so an append never changes the file's size or
// allocates a block, and fdatasync has no metadata to write. Generation g
// lives in slot g%2: a drain writes g+1 into the other slot, so a header
// write torn by a power cut leaves the previous header intact. The drain's
// bbolt transaction records g as drained (meta key outbox-log-drained), so
// the records of a generation bbolt already holds are never applied twice,
// whether the crash came before the header write or tore it; a new log
// starts above that mark. A new generation is synced before any frame of
// it is written.
//
// Reading stops at the first frame that is short, fails its CRC, belongs to
// another generation or does not carry the next number (and, for messages,
// the next sequence): what a crash leaves there was never answered to a
// publisher. A readable frame of the current generation further on means
// damage (or a multi-frame write whose sectors a power cut persisted out of
// order); the readable part is applied either way and the file is moved
// aside for inspection, with one log line.
const (
	outboxLogSize   = 512 << 10
	logSlotSize     = 512
	logDataStart    = 4096
	logHeaderLen    = 24
	logFrameHeader  = 24
	logMagic        = "tetherOL"
	logVersion      = 1
	logKindMessage  = 1
	logKindAck      = 2
	logMessageExtra = 1 + 8 // kind, seq
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var frameZeros [logFrameHeader]byte

// errLogDamaged marks a log that must be moved aside.
var errLogDamaged = errors.New("outbox log damaged")

// outboxLogPath is where the log of the state file at statePath lives.
func outboxLogPath(statePath string) string { return statePath + ".outbox-log" }

// outboxLog is an open log. Only the outbox's committer uses it (under
// Outbox.wmu).
type outboxLog struct {
	f    *os.File
	path string
	size int64
	gen  uint64
	off  int64  // where the next frame goes
	num  uint64 // the next frame's number
}

// logRecord is a frame read back: a message (seq, rec) or acknowledgements.
type logRecord struct {
	kind byte
	seq  uint64
	rec  []byte
	acks []uint64
}

// free is how many bytes of frames still fit.
func (l *outboxLog) free() int64 { return l.size - l.off }

// empty reports whether the current generation has no frame.
func (l *outboxLog) empty() bool { return l.off == logDataStart }

// capacity is how many bytes of frames an empty log holds.
func (l *outboxLog) capacity() int64 { return l.size - logDataStart }

// frames builds frames for the current generation, numbered from the next.
type frames struct {
	gen, num uint64
	buf      []byte
	n        int
}

func (l *outboxLog) frames(buf []byte) frames {
	return frames{gen: l.gen, num: l.num, buf: buf[:0]}
}

// begin starts a frame of kind and returns where it starts.
func (fr *frames) begin(kind byte) int {
	start := len(fr.buf)
	fr.buf = append(fr.buf, frameZeros[:]...)
	fr.buf = append(fr.buf, kind)
	return start
}

// end completes the frame that begin started at start.
func (fr *frames) end(start int) {
	h := fr.buf[start : start+logFrameHeader]
	binary.BigEndian.PutUint32(h[0:4], uint32(len(fr.buf)-start-logFrameHeader))
	binary.BigEndian.PutUint64(h[8:16], fr.gen)
	binary.BigEndian.PutUint64(h[16:24], fr.num+uint64(fr.n))
	binary.BigEndian.PutUint32(h[4:8], crc32.Checksum(fr.buf[start+8:], castagnoli))
	fr.n++
}

// message adds a message frame.
func (fr *frames) message(seq uint64, rec []byte) {
	start := fr.begin(logKindMessage)
	fr.buf = binary.BigEndian.AppendUint64(fr.buf, seq)
	fr.buf = append(fr.buf, rec...)
	fr.end(start)
}

// ack adds a frame acknowledging seqs.
func (fr *frames) ack(seqs []uint64) {
	start := fr.begin(logKindAck)
	for _, s := range seqs {
		fr.buf = binary.BigEndian.AppendUint64(fr.buf, s)
	}
	fr.end(start)
}

// messageFrameSize is what message adds for a record of n bytes.
func messageFrameSize(n int64) int64 { return logFrameHeader + logMessageExtra + n }

// ackFrameSize is what ack adds for n acknowledgements.
func ackFrameSize(n int) int64 { return logFrameHeader + 1 + 8*int64(n) }

// append writes fr with one pwrite and makes it durable with one
// fdatasync. The caller checked that it fits.
func (l *outboxLog) append(fr frames) error {
	if int64(len(fr.buf)) > l.free() {
		return fmt.Errorf("outbox log %s: %d bytes of frames do not fit in %d", l.path, len(fr.buf), l.free())
	}
	if _, err := l.f.WriteAt(fr.buf, l.off); err != nil {
		return fmt.Errorf("write outbox log %s: %w", l.path, err)
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("sync outbox log %s: %w", l.path, err)
	}
	l.off += int64(len(fr.buf))
	l.num += uint64(fr.n)
	return nil
}

// reset starts the next generation: every frame written so far is ignored
// from now on. Call it only once they are all in bbolt.
func (l *outboxLog) reset() error { return l.resetTo(l.gen + 1) }

// resetTo starts generation gen, which must be above the current one and
// every one bbolt records as drained.
func (l *outboxLog) resetTo(gen uint64) error {
	if _, err := l.f.WriteAt(logHeader(gen), logSlot(gen)); err != nil {
		return fmt.Errorf("write outbox log header %s: %w", l.path, err)
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("sync outbox log header %s: %w", l.path, err)
	}
	l.gen, l.off, l.num = gen, logDataStart, 1
	return nil
}

func (l *outboxLog) close() error { return l.f.Close() }

func logSlot(gen uint64) int64 { return int64(gen%2) * logSlotSize }

func logHeader(gen uint64) []byte {
	h := make([]byte, 0, logHeaderLen)
	h = append(h, logMagic...)
	h = binary.BigEndian.AppendUint32(h, logVersion)
	h = binary.BigEndian.AppendUint64(h, gen)
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

// readHeader returns the generation of a valid header slot, or 0.
func readHeader(slot []byte) uint64 {
	if len(slot) < logHeaderLen || string(slot[:8]) != logMagic ||
		binary.BigEndian.Uint32(slot[20:24]) != crc32.Checksum(slot[:20], castagnoli) ||
		binary.BigEndian.Uint32(slot[8:12]) != logVersion {
		return 0
	}
	return binary.BigEndian.Uint64(slot[12:20])
}

// createOutboxLog makes a fresh, zeroed log of generation gen at path.
// It does not use atomicfile.WriteFile: its temporary file has one fixed
// name, so a crash while it is written leaves at most one 512 KiB file,
// which the next start removes, and it keeps the file open for appends.
func createOutboxLog(path string, gen uint64) (*outboxLog, error) {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, stateFileMode)
	if err != nil {
		return nil, fmt.Errorf("create outbox log %s: %w", tmp, err)
	}
	buf := make([]byte, outboxLogSize)
	copy(buf[logSlot(gen):], logHeader(gen))
	if _, err := f.WriteAt(buf, 0); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("create outbox log %s: %w", path, err)
	}
	return &outboxLog{f: f, path: path, size: outboxLogSize, gen: gen, off: logDataStart, num: 1}, nil
}

// openOutboxLog opens the log at path, creating it at generation gen when
// there is none (an absent log is an empty one), and returns the records of its current
// generation. An error wrapping errLogDamaged comes with the log and the
// records that could be read: apply them, then move the file aside. Any
// other error means the log cannot be used at all.
func openOutboxLog(path string, gen uint64) (*outboxLog, []logRecord, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		l, err := createOutboxLog(path, gen)
		return l, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open outbox log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open outbox log %s: %w", path, err)
	}
	size := min(fi.Size(), outboxLogSize)
	if size < 2*logSlotSize {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s is %d bytes, want %d", errLogDamaged, path, fi.Size(), outboxLogSize)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), data); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read outbox log %s: %w", path, err)
	}
	gen = max(readHeader(data[:logSlotSize]), readHeader(data[logSlotSize:2*logSlotSize]))
	if gen == 0 {
		f.Close()
		return nil, nil, fmt.Errorf("%w: %s has no readable header", errLogDamaged, path)
	}
	l := &outboxLog{f: f, path: path, size: size, gen: gen}
	recs, off, num := parseFrames(data, gen)
	l.off, l.num = off, num
	if later := laterFrame(data, off, gen); later >= 0 {
		return l, recs, fmt.Errorf("%w: %s: the frame at offset %d is unreadable, yet one at offset %d is readable", errLogDamaged, path, off, later)
	}
	if fi.Size() != outboxLogSize {
		// Cut short or grown by something else than tether.
		return l, recs, fmt.Errorf("%w: %s is %d bytes, want %d", errLogDamaged, path, fi.Size(), outboxLogSize)
	}
	return l, recs, nil
}

// parseFrames reads the frames of generation gen from logDataStart on and
// returns them, where they end and the next frame number.
func parseFrames(data []byte, gen uint64) (recs []logRecord, off int64, num uint64) {
	off, num = logDataStart, 1
	var lastSeq uint64
	for {
		body, ok := frameAt(data, off, gen, num)
		if !ok {
			return recs, off, num
		}
		var r logRecord
		switch r.kind = body[0]; {
		case r.kind == logKindMessage && len(body) >= logMessageExtra+recordHeader:
			r.seq, r.rec = binary.BigEndian.Uint64(body[1:9]), body[9:]
			if _, err := decodeAt(r.seq, r.rec); err != nil || (lastSeq != 0 && r.seq != lastSeq+1) {
				return recs, off, num
			}
			lastSeq = r.seq
		case r.kind == logKindAck && (len(body)-1)%8 == 0:
			for b := body[1:]; len(b) > 0; b = b[8:] {
				r.acks = append(r.acks, binary.BigEndian.Uint64(b))
			}
		default:
			return recs, off, num
		}
		recs = append(recs, r)
		off += logFrameHeader + int64(len(body))
		num++
	}
}

// frameAt returns the body of the frame at off if it is whole, of
// generation gen and numbered num (any number when num is 0).
func frameAt(data []byte, off int64, gen, num uint64) ([]byte, bool) {
	if off+logFrameHeader > int64(len(data)) {
		return nil, false
	}
	h := data[off : off+logFrameHeader]
	n := int64(binary.BigEndian.Uint32(h[0:4]))
	if n == 0 || off+logFrameHeader+n > int64(len(data)) ||
		binary.BigEndian.Uint64(h[8:16]) != gen ||
		(num != 0 && binary.BigEndian.Uint64(h[16:24]) != num) {
		return nil, false
	}
	frame := data[off+8 : off+logFrameHeader+n]
	if crc32.Checksum(frame, castagnoli) != binary.BigEndian.Uint32(h[4:8]) {
		return nil, false
	}
	return data[off+logFrameHeader : off+logFrameHeader+n], true
}

// laterFrame returns the offset of a whole frame of generation gen after
// off, or -1.
func laterFrame(data []byte, off int64, gen uint64) int64 {
	for o := off + 1; o+logFrameHeader <= int64(len(data)); o++ {
		if binary.BigEndian.Uint64(data[o+8:o+16]) != gen {
			continue
		}
		if _, ok := frameAt(data, o, gen, 0); ok {
			return o
		}
	}
	return -1
}

// genOrZero is the generation of a log, 0 for none.
func (l *outboxLog) genOrZero() uint64 {
	if l == nil {
		return 0
	}
	return l.gen
}
