#!/usr/bin/env bash
# Fingerprints of what users get: sipvis track (reference weights on the reference clips, the demo model
# on every ../shared/media clip, several inputs into one JSON) and sipvis eval (AP JSON on shared cases),
# as files plus a SHA256SUMS. Run it before and after a refactor and diff the two SHA256SUMS: a
# structural change must leave them identical.
#
#   benchmarks/output_fingerprints.sh /tmp/before      # on the old commit
#   benchmarks/output_fingerprints.sh /tmp/after       # on the new one
#   diff /tmp/before/SHA256SUMS /tmp/after/SHA256SUMS
set -euo pipefail
OUT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
PY=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$OUT"
run() { (cd "$ROOT" && "$PY" -c 'from sipvis.cli import main; main()' "$@"); }
"$PY" - "$SHARED/reference/sipmask_vis" "$OUT/ref.pth" <<'PY'
import importlib.util, json, sys
import torch
ref, out = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("make_weights", f"{ref}/make_weights.py")
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
keys = json.load(open(f"{ref}/manifest.json"))["state_dict"]
torch.save({"state_dict": recipe.make_state_dict(keys), "meta": {}}, out)
PY
for clip in clip_a clip_b; do
  run track --tracker original "$SHARED/reference/sipmask_vis/$clip/frames" --weights "$OUT/ref.pth" \
    -o "$OUT/ref_$clip.json" -o "$OUT/ref_$clip.txt" --quiet
done
for f in "$SHARED"/media/*.mp4 "$SHARED"/media/*.avi; do
  name=$(basename "${f%.*}")
  run track --tracker original "$f" --weights demo --max-frames 12 -o "$OUT/media_$name.json" -o "$OUT/media_$name.txt" --quiet
done
run track --tracker original "$SHARED/media/bikes.mp4" "$SHARED/media/vtest.avi" --weights demo --max-frames 6 -o "$OUT/multi.json" --quiet
for c in perfect crowd noisy_small many_videos score_ties; do
  d=$SHARED/reference/ytvis_eval/$c
  run eval --gt "$d/gt.json" --results "$d/pred.json" --json "$OUT/eval_$c.json" --quiet >/dev/null
done
rm -f "$OUT/ref.pth" "$OUT"/ref.pth.sipvis.*
(cd "$OUT" && sha256sum -- *.json *.txt > SHA256SUMS)
echo "fingerprints: $OUT/SHA256SUMS"
