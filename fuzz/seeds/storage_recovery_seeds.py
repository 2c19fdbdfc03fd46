# Seeds for the storage_recovery fuzz target: valid segments and hint files
# built from the format in docs/storage.md (magic, header CRC, record CRC).
import struct, zlib, os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
def record(kind, ns, part, key, payload, seq):
    head = struct.pack('<IBBBBIHHIQ', 0x52564B44, 1, kind, ns, 0, part, len(key), 0, len(payload), seq)
    hcrc = zlib.crc32(head + key) & 0xffffffff
    body = head + struct.pack('<I', hcrc) + key + payload
    return body + struct.pack('<I', zlib.crc32(body) & 0xffffffff)
def hint(segment, seglen, entries):
    h = struct.pack('<IB3sIQI', 0x48564B44, 1, b'\0\0\0', segment, seglen, len(entries))
    for (kind, ns, key, part, off, ln, seq) in entries:
        h += struct.pack('<BBHIIIQ', kind, ns, len(key), part, off, ln, seq) + key
    return h + struct.pack('<I', zlib.crc32(h) & 0xffffffff)
def build(n1, n2, with_hint, seqbase=1):
    seg1 = b''; ents = []; seq = seqbase
    for i in range(n1):
        kind = [1, 1, 2, 3, 1][i % 5]; ns = i % 2
        key = b'key-%03d' % (i % 7) if kind != 4 else b''
        payload = b'' if kind in (3, 4, 5) else (b'v%d|' % i) * (1 + i % 4)
        r = record(kind, ns, i % 3, key, payload, seq)
        ents.append((kind, ns, key, i % 3, len(seg1), len(r), seq))
        seg1 += r; seq += 1
    seg1 += record(4, 0, 2, b'', b'', seq); seq += 1
    seg1 += record(5, 0, 0, b'', b'', seq); seq += 1
    seg2 = b''
    for i in range(n2):
        seg2 += record(1, 0, i % 3, b'key-%03d' % i, b'new%d' % i, seq); seq += 1
    h = hint(1, len(seg1), ents) if with_hint else b''
    return seg1, h, seg2
for n, (n1, n2, wh) in enumerate([(3, 2, True), (8, 0, True), (5, 3, False), (1, 1, True), (10, 6, True)]):
    seg1, h, seg2 = build(n1, n2, wh)
    x = len(seg1); y = len(seg1) + len(h)
    data = struct.pack('<HH', x, y) + seg1 + h + seg2
    open(os.path.join(out, 'seed-%d' % n), 'wb').write(data)
print('ok')
