#!/usr/bin/env python3
"""Extracts the first test images of Fashion-MNIST (Debian package dataset-fashion-mnist) as
8-bit grayscale PNGs named <index>_<label>.png. Run from this folder:
    python3 extract_fashion.py /usr/share/datasets/fashion-mnist 3
Pure standard library (gzip, zlib, struct)."""
import gzip, struct, sys, zlib

LABELS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]

def png(path, w, h, pixels):
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

root, n = sys.argv[1], int(sys.argv[2])
imgs = gzip.open(f"{root}/t10k-images-idx3-ubyte.gz").read()
labs = gzip.open(f"{root}/t10k-labels-idx1-ubyte.gz").read()
for i in range(n):
    px = imgs[16 + i * 784:16 + (i + 1) * 784]
    png(f"{i}_{LABELS[labs[8 + i]]}.png", 28, 28, px)
