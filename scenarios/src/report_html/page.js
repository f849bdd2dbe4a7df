// The failure report page's script (scenarios/src/report_html.rs): draws the timeline and the trace panel from
// the JSON in #data. Items: [lane, t0, t1 (-1: a point), class, text, seq (-1: none), label (operations)]; messages: [from lane,
// to lane, sent, arrived, class, seq]; log rows: [seq, at, node (-1: none), text]. Times are in nanoseconds.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var NAME_W = 170, PAD = 40, MS = 1e6;
  var timeline = document.getElementById("timeline");
  var wires = document.getElementById("wires");
  var axis = document.getElementById("axis");
  var logEl = document.getElementById("log");
  var hover = document.getElementById("hover");
  var tracks = {};
  Array.prototype.forEach.call(document.querySelectorAll(".track[data-lane]"), function (t) {
    tracks[t.getAttribute("data-lane")] = t;
  });
  var laneEls = D.lanes.map(function (id) { return tracks[id]; });
  var endMs = Math.max(D.end / MS, 0.001);
  var scale = 1; // pixels per simulated millisecond
  var selected = null;

  function x(t) { return (t / MS) * scale; }
  function fmt(t) { return (t / MS).toFixed(3) + " ms"; }

  // The trace panel: one row per event, built once.
  var rows = [], rowBySeq = new Map(), times = [];
  (function buildLog() {
    var frag = document.createDocumentFragment();
    var win = D.window;
    D.log.forEach(function (e) {
      var div = document.createElement("div");
      var text = e[3];
      var k = "k-other";
      if (/^fault |^node (Crash|PowerCut)|^disk power cut/.test(text)) k = "k-fault";
      else if (/^drop /.test(text)) k = "k-drop";
      else if (/^log /.test(text)) k = "k-log";
      else if (/^(send|deliver|duplicate|hold) /.test(text)) k = "k-msg";
      div.className = "l " + k + (win && e[1] >= win[0] && e[1] <= win[1] ? " win" : "");
      div.setAttribute("data-seq", e[0]);
      var node = e[2] < 0 ? "-" : "n" + e[2];
      var t = document.createElement("span"); t.className = "t";
      t.textContent = ("#" + e[0]).padEnd(7) + (e[1] / MS).toFixed(3).padStart(11) + "ms ";
      var n = document.createElement("span"); n.className = "n"; n.textContent = node.padEnd(4) + " ";
      div.appendChild(t); div.appendChild(n); div.appendChild(document.createTextNode(text));
      div._at = e[1];
      div._text = (node + " " + text).toLowerCase();
      frag.appendChild(div);
      rows.push(div); rowBySeq.set(e[0], div); times.push(e[1]);
    });
    logEl.appendChild(frag);
    document.getElementById("log-count").textContent = rows.length + " events";
  })();

  function rowAt(t) { // the first event at or after t
    var lo = 0, hi = times.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (times[mid] < t) lo = mid + 1; else hi = mid; }
    return rows[Math.min(lo, rows.length - 1)];
  }

  function selectRow(row) {
    if (!row) return;
    if (selected) selected.classList.remove("sel");
    selected = row;
    if (row.classList.contains("hide")) { filter.value = ""; applyFilter(); }
    row.classList.add("sel");
    logEl.scrollTop = row.offsetTop - logEl.offsetTop - logEl.clientHeight / 3;
  }

  // The timeline: every item as a positioned div in its lane, messages as SVG lines across lanes.
  function draw() {
    var width = Math.ceil(x(D.end)) + PAD;
    var count = 0;
    laneEls.forEach(function (t) { t.textContent = ""; t.style.width = width + "px"; });
    axis.textContent = ""; axis.style.width = width + "px";
    var frags = laneEls.map(function () { return document.createDocumentFragment(); });
    D.items.forEach(function (it, i) {
      var d = document.createElement("div");
      var point = it[2] < 0;
      d.className = "it " + it[3];
      d.setAttribute("data-item", i);
      d.setAttribute("data-t", (it[1] / MS).toFixed(3));
      var left = x(it[1]);
      if (point) {
        d.style.left = (left - 1) + "px";
      } else {
        var w = Math.max(x(it[2]) - left, 2);
        d.style.left = left + "px"; d.style.width = w + "px";
        if (w > 30 && it[6]) d.textContent = it[6];
      }
      d.title = it[4];
      frags[it[0]].appendChild(d);
      count++;
    });
    laneEls.forEach(function (t, i) { t.appendChild(frags[i]); });
    // Axis ticks at a round step at least 90 px apart.
    var step = 1e-3, steps = [1, 2, 5];
    outer: for (var p = -3; p < 9; p++) for (var s = 0; s < 3; s++) {
      step = steps[s] * Math.pow(10, p);
      if (step * scale >= 90) break outer;
    }
    var afrag = document.createDocumentFragment();
    for (var m = 0; m <= endMs + step / 2; m += step) {
      var tk = document.createElement("div"); tk.className = "tick";
      tk.style.left = (m * scale) + "px";
      tk.textContent = +m.toFixed(3) + "";
      afrag.appendChild(tk);
    }
    axis.appendChild(afrag);
    drawOverlays(width);
    timeline.setAttribute("data-drawn", count);
    document.getElementById("scale").textContent =
      "run " + endMs.toFixed(1) + " ms · " + (scale >= 1 ? scale.toFixed(1) + " px/ms" : (1 / scale).toFixed(2) + " ms/px");
  }

  function laneY(i) { var t = laneEls[i]; return t.parentNode.offsetTop + t.offsetHeight / 2; }

  function drawOverlays(width) {
    var height = timeline.scrollHeight;
    var old = timeline.querySelectorAll("#shade, .grid");
    Array.prototype.forEach.call(old, function (e) { e.remove(); });
    if (D.window) {
      var sh = document.createElement("div"); sh.id = "shade";
      sh.style.left = (NAME_W + x(D.window[0])) + "px";
      sh.style.width = Math.max(x(D.window[1]) - x(D.window[0]), 2) + "px";
      sh.style.height = height + "px";
      sh.title = "violation window " + fmt(D.window[0]) + " .. " + fmt(D.window[1]);
      timeline.appendChild(sh);
    }
    var svgNS = wires.namespaceURI; // the SVG namespace, without spelling its URL in the page
    wires.textContent = "";
    wires.setAttribute("width", width); wires.setAttribute("height", height);
    var ys = laneEls.map(function (_, i) { return laneY(i); });
    var frag = document.createDocumentFragment();
    D.msgs.forEach(function (m) {
      var l = document.createElementNS(svgNS, "line");
      l.setAttribute("class", m[4]);
      l.setAttribute("x1", x(m[2])); l.setAttribute("y1", ys[m[0]]);
      l.setAttribute("x2", x(m[3])); l.setAttribute("y2", ys[m[1]]);
      frag.appendChild(l);
      if (m[4].indexOf("drop") >= 0) {
        var c = document.createElementNS(svgNS, "circle");
        c.setAttribute("class", "drop"); c.setAttribute("r", 2.5);
        c.setAttribute("cx", x(m[3])); c.setAttribute("cy", ys[m[1]]);
        frag.appendChild(c);
      }
    });
    wires.appendChild(frag);
    wires.setAttribute("data-msgs", D.msgs.length);
  }

  function paneWidth() { return Math.max(timeline.clientWidth - NAME_W - PAD, 100); }
  function setScale(s, centreMs) {
    var max = 2e7 / endMs; // keep the tracks under 20M px
    scale = Math.min(Math.max(s, 1e-6), max);
    draw();
    if (centreMs !== undefined) timeline.scrollLeft = Math.max(centreMs * scale - paneWidth() / 2, 0);
  }
  function centre() { return (timeline.scrollLeft + paneWidth() / 2) / scale; }
  function fit() { setScale(paneWidth() / endMs); timeline.scrollLeft = 0; }
  function zoomWindow() {
    if (!D.window) return fit();
    var a = D.window[0] / MS, b = D.window[1] / MS, span = Math.max(b - a, 0.001);
    setScale(paneWidth() / (span * 1.4), (a + b) / 2);
  }

  document.getElementById("zoom-in").onclick = function () { setScale(scale * 2, centre()); };
  document.getElementById("zoom-out").onclick = function () { setScale(scale / 2, centre()); };
  document.getElementById("zoom-fit").onclick = fit;
  var zw = document.getElementById("zoom-window");
  if (!D.window) zw.disabled = true;
  zw.onclick = zoomWindow;
  document.getElementById("show-msgs").onchange = function (e) { wires.classList.toggle("hidden", !e.target.checked); };
  timeline.addEventListener("wheel", function (e) {
    if (!e.ctrlKey && !e.metaKey) return;
    e.preventDefault();
    var r = timeline.getBoundingClientRect();
    var atMs = (timeline.scrollLeft + e.clientX - r.left - NAME_W) / scale;
    var s = scale * (e.deltaY < 0 ? 1.25 : 0.8);
    setScale(s);
    timeline.scrollLeft = Math.max(atMs * scale - (e.clientX - r.left - NAME_W), 0);
  }, { passive: false });
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "+" || e.key === "=") setScale(scale * 2, centre());
    if (e.key === "-") setScale(scale / 2, centre());
  });

  // Clicking an item scrolls the trace to its event (or, for an operation, to the first event at its start).
  var lastItem = null;
  timeline.addEventListener("click", function (e) {
    var d = e.target.closest(".it");
    if (!d) return;
    var it = D.items[+d.getAttribute("data-item")];
    if (lastItem) lastItem.classList.remove("sel");
    lastItem = d; d.classList.add("sel");
    selectRow(it[5] >= 0 ? rowBySeq.get(it[5]) : rowAt(it[1]));
  });
  timeline.addEventListener("mouseover", function (e) {
    var d = e.target.closest(".it");
    if (d) hover.textContent = d.title;
  });
  // Clicking a trace row shows its time on the timeline.
  logEl.addEventListener("click", function (e) {
    var row = e.target.closest(".l");
    if (!row) return;
    selectRow(row);
    var c = document.getElementById("cursor");
    if (!c) { c = document.createElement("div"); c.id = "cursor"; timeline.appendChild(c); }
    c.style.left = (NAME_W + x(row._at)) + "px";
    c.style.height = timeline.scrollHeight + "px";
    var px = x(row._at);
    if (px < timeline.scrollLeft || px > timeline.scrollLeft + paneWidth()) {
      timeline.scrollLeft = Math.max(px - paneWidth() / 2, 0);
    }
  });

  var filter = document.getElementById("filter");
  function applyFilter() {
    var q = filter.value.trim().toLowerCase(), shown = 0;
    rows.forEach(function (r) {
      var hide = q !== "" && r._text.indexOf(q) < 0;
      r.classList.toggle("hide", hide);
      if (!hide) shown++;
    });
    document.getElementById("log-count").textContent =
      (q ? shown + " of " : "") + rows.length + " events";
  }
  var pending = 0;
  filter.addEventListener("input", function () { clearTimeout(pending); pending = setTimeout(applyFilter, 120); });

  if (location.hash === "#window") zoomWindow(); else fit();
  // The first event of the violation window, in view in the trace.
  if (D.window) {
    var first = rowAt(D.window[0]);
    if (first) logEl.scrollTop = first.offsetTop - logEl.offsetTop - 20;
  }
  window.addEventListener("resize", function () { draw(); });
  // The message lines stay out from under the sticky lane names (SVG paints over them otherwise).
  function clipWires() { wires.style.clipPath = "inset(0 0 0 " + timeline.scrollLeft + "px)"; }
  timeline.addEventListener("scroll", clipWires);
  clipWires();
  document.body.setAttribute("data-ready", "1");
})();
