"""The live viewer's page (HTML, CSS and JavaScript in one string, served at ``/``).

Kept as a Python string, not a file beside the package, so that it ships in every install
(the package lists no data files). Element ids used by the tests: ``frame-count``, ``fps``,
``dropped``, ``raw``, ``cube``, ``overlay``, ``spectrum`` (SVG), ``spectrum-line`` (its
polyline), ``spectrum-info``, ``band``.
"""

PAGE_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hyplex live viewer</title>
<style>
  body { font-family: system-ui, sans-serif; background: #111; color: #ddd; margin: 12px; }
  h1 { font-size: 18px; margin: 0 0 8px 0; }
  #status { font-family: monospace; margin-bottom: 10px; }
  .panes { display: flex; flex-wrap: wrap; gap: 12px; }
  .pane { background: #1c1c1c; padding: 6px; }
  .pane h2 { font-size: 13px; margin: 0 0 4px 0; font-weight: normal; color: #aaa; }
  .pane img { width: 384px; image-rendering: pixelated; display: block; cursor: crosshair; }
  #spectrum { background: #fff; width: 384px; height: 220px; }
  #spectrum-info { font-family: monospace; font-size: 12px; min-height: 1.2em; }
  #error { color: #f66; }
</style>
</head>
<body>
<h1>hyplex live viewer</h1>
<div id="status">frame <span id="frame-count">0</span> &middot; <span id="fps">0</span> fps
  &middot; dropped <span id="dropped">0</span> (source <span id="source-dropped">0</span>)
  &middot; corrupt <span id="corrupt">0</span> &middot; latency <span id="latency">-</span> ms
  &middot; unknown <span id="unknown-share">-</span>
  <span id="error"></span></div>
<div class="panes">
  <div class="pane"><h2>raw frame</h2><img id="raw" src="/stream/raw" alt="raw frame"></div>
  <div class="pane"><h2>reconstructed cube:
    <select id="band"><option value="rgb">RGB</option></select></h2>
    <img id="cube" src="/stream/rgb" alt="reconstructed cube"></div>
  <div class="pane"><h2>segmentation overlay</h2>
    <img id="overlay" src="/stream/overlay" alt="segmentation overlay"></div>
  <div class="pane" id="unknown-pane" style="display: none"><h2>unknown material
    (open-set head, white = unknown)</h2>
    <img id="unknown" alt="unknown-material map"></div>
  <div class="pane"><h2>spectrum under the cursor (click a map)</h2>
    <svg id="spectrum" viewBox="0 0 384 220" preserveAspectRatio="none">
      <polyline id="spectrum-line" fill="none" stroke="#1565c0" stroke-width="2" points="">
      </polyline>
      <text id="axis-low" x="4" y="214" font-size="11" fill="#333"></text>
      <text id="axis-high" x="380" y="214" font-size="11" fill="#333" text-anchor="end"></text>
    </svg>
    <div id="spectrum-info"></div></div>
  <div class="pane"><h2>material beliefs per object (Noisy-OR over frames)</h2>
    <pre id="beliefs">-</pre></div>
</div>
<script>
let shape = null, bandsFilled = false;
async function poll() {
  try {
    const s = await (await fetch('/api/status', {cache: 'no-store'})).json();
    document.getElementById('frame-count').textContent = s.frames;
    document.getElementById('fps').textContent = s.fps.toFixed(1);
    document.getElementById('dropped').textContent = s.dropped;
    document.getElementById('source-dropped').textContent = s.source_dropped;
    document.getElementById('corrupt').textContent = s.corrupt;
    document.getElementById('latency').textContent = s.latency_ms === null ? '-' : s.latency_ms;
    document.getElementById('error').textContent = s.error || '';
    const share = s.unknown_share;
    document.getElementById('unknown-share').textContent =
      share === null || share === undefined ? '-' : (100 * share).toFixed(1) + ' %';
    if (share !== null && share !== undefined) {
      const pane = document.getElementById('unknown-pane');
      if (pane.style.display === 'none') {
        pane.style.display = '';
        document.getElementById('unknown').src = '/stream/unknown';
      }
    }
    const beliefs = s.material_beliefs;
    document.getElementById('beliefs').textContent = !beliefs ? '-' :
      Object.entries(beliefs).map(([obj, cands]) => 'object ' + obj + ': ' +
        cands.map(([name, p]) => name + ' ' + p.toFixed(2)).join(', ')).join('\n') || '-';
    shape = s.shape;
    if (!bandsFilled && s.wavelengths_nm.length) {
      const select = document.getElementById('band');
      s.wavelengths_nm.forEach((wl, i) => {
        const option = document.createElement('option');
        option.value = i; option.textContent = wl.toFixed(0) + ' nm';
        select.appendChild(option);
      });
      bandsFilled = true;
    }
  } catch (e) { document.getElementById('error').textContent = 'status: ' + e; }
  setTimeout(poll, 250);
}
document.getElementById('band').addEventListener('change', (event) => {
  const value = event.target.value;
  document.getElementById('cube').src =
    value === 'rgb' ? '/stream/rgb' : '/stream/band?band=' + value;
});
async function showSpectrum(event) {
  if (!shape) return;
  const img = event.target, box = img.getBoundingClientRect();
  const col = Math.min(shape[1] - 1, Math.floor((event.clientX - box.left) / box.width * shape[1]));
  const row = Math.min(shape[0] - 1, Math.floor((event.clientY - box.top) / box.height * shape[0]));
  const reply = await fetch('/api/spectrum?row=' + row + '&col=' + col, {cache: 'no-store'});
  const info = document.getElementById('spectrum-info');
  if (!reply.ok) { info.textContent = 'no spectrum: ' + (await reply.text()); return; }
  const s = await reply.json();
  const values = s.values, wl = s.wavelengths_nm;
  const low = Math.min(...values), high = Math.max(...values), span = (high - low) || 1;
  const points = values.map((v, i) =>
    (4 + 376 * i / Math.max(values.length - 1, 1)).toFixed(1) + ',' +
    (200 - 190 * (v - low) / span).toFixed(1));
  document.getElementById('spectrum-line').setAttribute('points', points.join(' '));
  document.getElementById('axis-low').textContent = wl[0].toFixed(0) + ' nm';
  document.getElementById('axis-high').textContent = wl[wl.length - 1].toFixed(0) + ' nm';
  info.textContent = 'metapixel (' + s.row + ', ' + s.col + ') class ' +
    (s.class_name === null ? s.label : s.class_name) + ', ' + values.length + ' bands, ' +
    'range ' + low.toPrecision(3) + '..' + high.toPrecision(3);
}
document.getElementById('overlay').addEventListener('click', showSpectrum);
document.getElementById('cube').addEventListener('click', showSpectrum);
poll();
</script>
</body>
</html>
"""
