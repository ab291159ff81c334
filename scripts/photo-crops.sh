#!/usr/bin/env bash
# Natural-photo crops for an RGB audit (`origami audit --data DIR`): SIZE×SIZE PNG crops, at a
# stride of SIZE/2, of the colour photographs that scikit-image ships in its PyPI wheel
# (skimage/data: astronaut, chelsea, coffee, motorcycle, rocket, retina, hubble_deep_field;
# scikit-image's data README gives their sources and licences — public domain or CC0). Nothing
# is committed: the wheel is fetched from PyPI into target/.
#
#   scripts/photo-crops.sh OUT [SIZE]      (SIZE: 64 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/photo-crops.sh OUT [SIZE]}
size=${2:-64}
work=target/photo-crops
venv=$work/venv
mkdir -p "$work" "$out"
{ [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; }
"$venv/bin/pip" install -q pillow==12.0.0
if ! ls "$work"/scikit_image-*.whl >/dev/null 2>&1; then
  "$venv/bin/pip" download -q --no-deps scikit-image==0.26.0 -d "$work"
fi
"$venv/bin/python" - "$work" "$out" "$size" <<'EOF'
import glob, io, random, sys, zipfile
from PIL import Image
work, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
         "motorcycle_right.png", "rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"]
whl = zipfile.ZipFile(sorted(glob.glob(f"{work}/scikit_image-*.whl"))[-1])
crops = []
for name in names:
    img = Image.open(io.BytesIO(whl.read(f"skimage/data/{name}"))).convert("RGB")
    w, h = img.size
    step = size // 2
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            crops.append((f"{name.split('.')[0]}-{y:04d}-{x:04d}", img.crop((x, y, x + size, y + size))))
# The audit scores the last files by name: a seeded shuffle in the names mixes the photos.
random.Random(2026).shuffle(crops)
for i, (name, crop) in enumerate(crops):
    crop.save(f"{out}/{i:05d}-{name}.png")
print(f"{len(crops)} crops of {size}x{size} in {out}")
EOF
