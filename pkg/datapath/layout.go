package datapath

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// layout is the byte layout of a map's key or value: its size and, when the
// map carries BTF for a struct, the struct's named fields.
type layout struct {
	size uint32
	// fields is nil when the type is not a struct or is unknown.
	fields []field
}

type field struct {
	name         string
	offset, size uint32
}

// layoutOf returns the layout of typ, a map's key or value type of size
// bytes. A nil typ, a struct with bit fields or another kind of type gives
// a layout without fields.
func layoutOf(typ btf.Type, size uint32) layout {
	l := layout{size: size}
	s, ok := btf.UnderlyingType(typ).(*btf.Struct)
	if !ok {
		return l
	}
	var fields []field
	for _, m := range s.Members {
		if m.BitfieldSize != 0 || m.Offset%8 != 0 {
			return l
		}
		n, err := btf.Sizeof(m.Type)
		if err != nil {
			return l
		}
		if m.Name == "" {
			continue
		}
		fields = append(fields, field{name: m.Name, offset: m.Offset.Bytes(), size: uint32(n)})
	}
	l.fields = fields
	return l
}

func (l layout) field(name string) (field, bool) {
	for _, f := range l.fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

// equal reports whether a and b lay out the same fields at the same places.
// Without fields on either side, equal sizes count as equal.
func (a layout) equal(b layout) bool {
	if a.size != b.size {
		return false
	}
	if a.fields == nil || b.fields == nil {
		return true
	}
	if len(a.fields) != len(b.fields) {
		return false
	}
	for i := range a.fields {
		if a.fields[i] != b.fields[i] {
			return false
		}
	}
	return true
}

// copyOp copies size bytes from offset from of an old entry to offset to of
// a new one.
type copyOp struct{ from, to, size uint32 }

// conversion turns an old key or value into the new layout. Fields of the
// new layout that the old one lacks stay zero.
type conversion struct {
	size uint32
	ops  []copyOp
}

func (c conversion) apply(old []byte) []byte {
	out := make([]byte, c.size)
	for _, op := range c.ops {
		copy(out[op.to:op.to+op.size], old[op.from:op.from+op.size])
	}
	return out
}

// planConversion matches the fields of two layouts by name. Every field of
// the new layout that the old one has must keep its size. When strict, as
// for keys, every old field must also be in the new layout, since keys that
// lost a field could collide.
func planConversion(old, new layout, strict bool) (conversion, error) {
	c := conversion{size: new.size}
	if old.fields == nil || new.fields == nil {
		if old.size != new.size {
			return c, fmt.Errorf("size changed from %d to %d bytes and the old layout "+
				"names no fields to convert by", old.size, new.size)
		}
		c.ops = []copyOp{{0, 0, old.size}}
		return c, nil
	}
	for _, nf := range new.fields {
		of, ok := old.field(nf.name)
		if !ok {
			continue
		}
		if of.size != nf.size {
			return c, fmt.Errorf("field %s changed size from %d to %d bytes", nf.name,
				of.size, nf.size)
		}
		c.ops = append(c.ops, copyOp{from: of.offset, to: nf.offset, size: nf.size})
	}
	if strict {
		for _, of := range old.fields {
			if _, ok := new.field(of.name); !ok {
				return c, fmt.Errorf("field %s was removed", of.name)
			}
		}
	}
	return c, nil
}

// pinnedLayouts reads the key and value layouts of a loaded map from the
// BTF that it was created with.
func pinnedLayouts(m *ebpf.Map) (key, value layout, err error) {
	key = layout{size: m.KeySize()}
	value = layout{size: m.ValueSize()}
	ids, err := mapBTFIDs(m)
	if err != nil || ids.btf == 0 {
		return key, value, err
	}
	h, err := btf.NewHandleFromID(btf.ID(ids.btf))
	if err != nil {
		return key, value, fmt.Errorf("open BTF %d of map %s: %w", ids.btf, m, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return key, value, fmt.Errorf("read BTF %d of map %s: %w", ids.btf, m, err)
	}
	if ids.key != 0 {
		if t, err := spec.TypeByID(btf.TypeID(ids.key)); err == nil {
			key = layoutOf(t, key.size)
		}
	}
	if ids.value != 0 {
		if t, err := spec.TypeByID(btf.TypeID(ids.value)); err == nil {
			value = layoutOf(t, value.size)
		}
	}
	return key, value, nil
}

// mapBTFInfo is struct bpf_map_info of include/uapi/linux/bpf.h (Linux 5.16
// and later) up to btf_vmlinux_id. cilium/ebpf v0.22 does not return the
// key and value type IDs of a map.
type mapBTFInfo struct {
	Type, ID, KeySize, ValueSize, MaxEntries, MapFlags uint32
	Name                                               [16]byte
	Ifindex, BTFVmlinuxValueTypeID                     uint32
	NetnsDev, NetnsIno                                 uint64
	BTFID, BTFKeyTypeID, BTFValueTypeID, BTFVmlinuxID  uint32
}

type btfIDs struct{ btf, key, value uint32 }

func mapBTFIDs(m *ebpf.Map) (btfIDs, error) {
	const bpfObjGetInfoByFD = 15
	// On the heap, which the garbage collector does not move, because the
	// kernel receives its address as an integer.
	info := new(mapBTFInfo)
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(m.FD()), uint32(unsafe.Sizeof(*info)), uint64(uintptr(unsafe.Pointer(info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, bpfObjGetInfoByFD, uintptr(unsafe.Pointer(&attr)),
		unsafe.Sizeof(attr))
	runtime.KeepAlive(info)
	if errno != 0 {
		return btfIDs{}, fmt.Errorf("read info of map %s: %w", m, errno)
	}
	return btfIDs{info.BTFID, info.BTFKeyTypeID, info.BTFValueTypeID}, nil
}
