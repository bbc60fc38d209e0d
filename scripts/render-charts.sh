#!/bin/sh
# Renders SVG charts and HTML reports to PNG with headless Chromium (Debian's `chromium`), so a
# person can look at what `loom experiment` and `loom simulate` draw, and tests can check that it
# renders. Usage: scripts/render-charts.sh OUT_DIR FILE.svg|FILE.html ...
# Each FILE becomes OUT_DIR/<name>.png: an SVG at its own size, an HTML page 1250 px wide in
# slices of 1400 px (<name>-1.png, <name>-2.png, ...) up to --max-slices (default 8).
# Exit 77 (CTest's skip code) when Chromium is not installed; 1 when a file fails to render.
set -eu
out=$1
shift
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chrome" ]; then
  echo "render-charts: no chromium on PATH (apt-get install chromium); skipping"
  exit 77
fi
mkdir -p "$out"
shot() {  # URL PNG WIDTH HEIGHT
  timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$out/.chromium" --window-size="$3,$4" --screenshot="$2" "$1" \
    >/dev/null 2>&1 || true
  if [ ! -s "$2" ]; then
    echo "render-charts: chromium wrote no $2"
    exit 1
  fi
}
for f in "$@"; do
  abs=$(cd "$(dirname "$f")" && pwd)/$(basename "$f")
  name=$(basename "$f" | sed 's/\.[^.]*$//')
  case "$f" in
    *.svg)
      # The chart's own size from its <svg width=".." height="..">.
      w=$(sed -n 's/.*<svg[^>]* width="\([0-9]*\)".*/\1/p' "$f" | head -1)
      h=$(sed -n 's/.*<svg[^>]* height="\([0-9]*\)".*/\1/p' "$f" | head -1)
      shot "file://$abs" "$out/$name.png" "${w:-1100}" "${h:-800}"
      ;;
    *.html)
      # Slices through an iframe shifted up by 1400 px each: headless screenshots show one viewport.
      i=1
      while [ $i -le "${MAX_SLICES:-8}" ]; do
        frame="$out/.$name-$i.html"
        printf '<html><body style="margin:0"><div style="width:1250px;height:1400px;overflow:hidden">'"\
"'<iframe src="file://%s" scrolling="no" style="width:1250px;height:20000px;border:0;'"\
"'margin-top:-%dpx"></iframe></div></body></html>\n' "$abs" $(((i - 1) * 1400)) >"$frame"
        shot "file://$frame" "$out/$name-$i.png" 1250 1400
        rm -f "$frame"
        i=$((i + 1))
      done
      ;;
    *)
      echo "render-charts: $f is neither .svg nor .html"
      exit 1
      ;;
  esac
  echo "render-charts: $f -> $out/$name*.png"
done
rm -rf "$out/.chromium"
